"""Draw a digit in the browser and watch the network read it: ``fastmlp serve model.npz``.

Standard library only (``http.server``); the page in ``static/`` uses no external files.
"""

from .server import load_history, make_server, serve

__all__ = ["make_server", "serve", "load_history"]
