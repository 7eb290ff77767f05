"""A learner partition's state: the join store, the online models and their checkpoints."""
