"""Refusals a person sees on the login page: a clear message, the detail only in the log."""

from __future__ import annotations

from tornado import web


class LoginRefused(web.HTTPError):
    """An HTTP error whose `message` JupyterHub shows (login form or error page) as is."""

    def __init__(self, status: int, message: str, detail: str = ""):
        super().__init__(status, log_message=(f"{message} ({detail})" if detail else message)
                         .replace("%", "%%"))
        self.message = message
        self.jupyterhub_message = message  # what jupyterhub's write_error shows
