"""``alphapulse ensemble fit``: fit the blend of the champions and the online model, register it.

Errors follow the one policy of :mod:`alphapulse._errors`, as for every command. With ``--json``
standard output is one JSON object on one line.

>>> from typer.testing import CliRunner
>>> from alphapulse.cli import app
>>> result = CliRunner().invoke(app, ["ensemble", "fit", "--method", "mean"])
>>> result.exit_code, result.stderr.strip()  # doctest: +NORMALIZE_WHITESPACE
(2, "error: Invalid value for '--method': 'mean' is not one of 'weights', 'stacking'.
(see 'root ensemble fit --help')")
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from alphapulse._choices import EnsembleMethod
from alphapulse._errors import REACH_TIMEOUT_S
from stream.settings import Settings

__all__ = ["register"]


def _fit(
    method: Annotated[
        EnsembleMethod | None,
        typer.Option(
            "--method",
            help="weights (log-loss-optimal weights) or stacking (logistic regression on the "
            "components' logits); default ALPHAPULSE_ENSEMBLE_METHOD.",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON line.")
    ] = False,
) -> None:
    """Fit the ensemble of the batch champions and the online model on recent joined history.

    The batch models are refitted out of fold and the online model scored prequentially, in time
    order; the fitted ensemble is registered as a version of the model `ensemble` and becomes its
    champion only when its log loss on the later held-out rows beats the fixed blend's.
    """
    # The job loads the boosters, pandas and mlflow: only `ensemble fit` pays for them.
    from agents.ensemble_fit import describe, run_ensemble_fit
    from stream.registry import check_tracking_server

    settings = Settings()
    check_tracking_server(settings, REACH_TIMEOUT_S)
    summary: dict[str, Any] = run_ensemble_fit(settings, method.value if method else None)
    if json_out:
        typer.echo(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}))
        return
    typer.echo(describe(summary))
    typer.echo(f"  {summary['_reason']}")
    parts = summary.get("weights") or summary.get("coef") or {}
    label = "weight" if "weights" in summary else "coef"
    typer.echo(f"  {'component':<14} {label:>8} {'fixed':>8}  fitted on")
    for role, value in parts.items():
        fixed = summary["fixed_weights"].get(role, 0.0)
        version = summary["fitted_on"].get(role)
        on = f"v{version}" if version is not None else "prequential"
        typer.echo(f"  {role:<14} {value:>8.4f} {fixed:>8.4f}  {on}")
    if "intercept" in summary:
        typer.echo(f"  {'intercept':<14} {summary['intercept']:>8.4f}")


def register(app: typer.Typer) -> None:
    """Add the ``ensemble`` group to ``app``."""
    ensemble_app = typer.Typer(
        help="The fitted ensemble of the batch champions and the online model.",
        no_args_is_help=True,
    )
    ensemble_app.command("fit")(_fit)
    app.add_typer(ensemble_app, name="ensemble")
