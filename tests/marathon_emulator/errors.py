"""The errors the API answers, each with its status and Marathon's JSON body.

From the RAML traits (``secured``, ``deployable``, ``objectValidator``...) and the examples in apps.raml
and deployments.raml; every body is JSON with at least ``message``:

=====  ============================================================================================
400    unparsable JSON: ``{"message": "Invalid JSON", "details": "<parser text>"}``; an empty body:
       ``{"message": "Please specify data in JSON format", "details": "<text>"}``
401    ``{"message": "Invalid username or password."}`` (authentication configured, missing or wrong)
404    ``{"message": "App '/x' does not exist"}`` (likewise ``Task '<id>'``, ``Group '/g'``), and
       ``DeploymentPlan <id> does not exist``
409    ``{"message": "An app with id [/x] already exists."}``, and a locked app:
       ``{"message": "App is locked by one or more deployments. Override with the option '?force=true'.
       View details at '/v2/deployments/<ID>'.", "deployments": [{"id": "<ID>"}]}``
413    a body over the emulator's limit (an emulator limit: Marathon documents none)
422    ``{"message": "Invalid JSON" | "Object is not valid", "details": [{"path", "errors"}]}``, or an
       illegal argument (a bad label selector): ``{"message": "..."}``
500    an unknown URI: ``{"message": "URI not found"}`` (what Marathon's exception mapper answers)
=====  ============================================================================================
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "app_not_found", "locked"]


class ApiError(Exception):
    """An answer other than success: ``status`` and the JSON ``body``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, **extra}


def app_not_found(app_id: str) -> ApiError:
    return ApiError(404, f"App '{app_id}' does not exist")


def locked(deployment_ids: list[str]) -> ApiError:
    """409 for an app that running deployments lock (the first id is the one the message points to)."""
    return ApiError(
        409,
        "App is locked by one or more deployments. Override with the option '?force=true'. "
        f"View details at '/v2/deployments/{deployment_ids[0]}'.",
        deployments=[{"id": deployment_id} for deployment_id in deployment_ids],
    )
