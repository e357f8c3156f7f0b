"""``reenact app``: a local web page to preview and run the pipeline (the ``app`` extra).

:func:`create_app` builds the FastAPI application (see :mod:`reenact.app.server`);
:mod:`reenact.app.cli` holds the ``add_args``/``run`` pair of the ``reenact app`` subcommand.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reenact.app.server import AppSettings


def create_app(settings: AppSettings | None = None) -> Any:
    """The FastAPI application (imported lazily: FastAPI is only in the ``app`` extra)."""
    from reenact.app.server import AppSettings, create_app

    return create_app(settings or AppSettings())
