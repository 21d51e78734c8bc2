"""HubSpot's calls as the tests make them over HTTP: the one set of helpers every test file shares."""

from typing import Any

import httpx

V4 = "/communication-preferences/v4"
EMAIL = {"channel": "EMAIL"}


def post_status(api: httpx.Client, email: str, subscription_id: int, state: str, **extra: Any) -> httpx.Response:
    """A v4 single status write, as an integration sends it; the response, whatever it is."""
    body = {"statusState": state, "subscriptionId": subscription_id, "channel": "EMAIL", **extra}
    return api.post(f"{V4}/statuses/{email}", json=body)


def set_status(api: httpx.Client, email: str, subscription_id: int, state: str, **extra: Any) -> dict[str, Any]:
    """A v4 single status write that must succeed: its one result."""
    response = post_status(api, email, subscription_id, state, **extra)
    assert response.status_code == 200, response.text
    (only,) = response.json()["results"]
    return only  # type: ignore[no-any-return]


def unsubscribe_all(api: httpx.Client, email: str, **params: Any) -> httpx.Response:
    """A v4 opt-out from all (portal-wide, or for `businessUnitId`) that must succeed."""
    response = api.post(f"{V4}/statuses/{email}/unsubscribe-all", params={**EMAIL, **params})
    assert response.status_code == 200, response.text
    return response
