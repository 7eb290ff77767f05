"""The AlphaPulse application: composition root, worker, CLI, demo, replay, reports, web."""
