"""Imports and exports over HTTP (/commprefs/v1) on both stores: the sample files, the job to poll,
rejected rows, HubSpot-shaped refusals that write nothing, and the streamed status export."""

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from commprefs.domain.enums import Scope
from tests.client import EMAIL, V4, set_status, unsubscribe_all
from tests.conftest import PortalFixture, Server, database_url, make_portal, run_server

IMPORTS = "/commprefs/v1/imports"
EXPORT = "/commprefs/v1/exports/statuses"
SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "imports"
EXPORT_COLUMNS = [
    "email",
    "scope",
    "business_unit_id",
    "subscription_id",
    "subscription_name",
    "status",
    "legal_basis",
    "legal_basis_explanation",
    "timestamp",
    "source",
]
NO_COUNTS = {"rows": 0, "rejected": 0, "applied": 0, "unchanged": 0, "newerKept": 0, "optOutKept": 0, "erased": 0}


# -- helpers (test_erasure.py uses them too) -------------------------------------------------------------


def assert_hubspot_error(
    response: httpx.Response, status: int, field: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """A HubSpot-shaped error body; `field`/`code` the first of its errors[] when a field is at fault."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    uuid.UUID(body["correlationId"])
    assert body["category"]
    if field is not None:
        assert body["errors"][0]["in"] == field, body
    if code is not None:
        assert body["errors"][0]["code"] == code, body
    return body  # type: ignore[no-any-return]


def post_import(api: httpx.Client, content: bytes, **params: Any) -> httpx.Response:
    """The file as the raw request body."""
    return api.post(IMPORTS, content=content, params=params, headers={"content-type": "text/csv"})


def wait_for(api: httpx.Client, job: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """Poll the job's links.self until it is COMPLETE or FAILED."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(job["links"]["self"])
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        if found["state"] in ("COMPLETE", "FAILED"):
            return found
        assert time.monotonic() < deadline, f"import still {found['state']} after {timeout}s: {found}"
        time.sleep(0.05)


def run_import(api: httpx.Client, content: bytes, **params: Any) -> dict[str, Any]:
    """Import `content` and wait for it: the finished job, which must be COMPLETE."""
    started = post_import(api, content, **params)
    assert started.status_code == 202, started.text
    done = wait_for(api, started.json())
    assert done["state"] == "COMPLETE", done
    return done


def counts(**nonzero: int) -> dict[str, int]:
    return {**NO_COUNTS, **nonzero}


def v4_statuses(api: httpx.Client, email: str) -> dict[str, dict[str, Any]]:
    """Subscription name -> v4 status of `email`."""
    response = api.get(f"{V4}/statuses/{email}", params=EMAIL)
    assert response.status_code == 200, response.text
    return {s["subscriptionName"]: s for s in response.json()["results"]}


def wide_statuses(api: httpx.Client, email: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get(f"{V4}/statuses/{email}/unsubscribe-all", params={**EMAIL, **params})
    assert response.status_code == 200, response.text
    return response.json()["results"]  # type: ignore[no-any-return]


def history(api: httpx.Client, email: str) -> list[dict[str, Any]]:
    response = api.get(f"/commprefs/v1/subscribers/{email}/history", params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["results"]  # type: ignore[no-any-return]


def make_brand(api: httpx.Client, name: str, definition: str) -> tuple[int, int]:
    brand = api.post("/commprefs/v1/business-units", json={"name": name})
    assert brand.status_code in (200, 201), brand.text
    created = api.post("/commprefs/v1/definitions", json={"name": definition, "businessUnitId": brand.json()["id"]})
    assert created.status_code == 201, created.text
    return int(brand.json()["id"]), int(created.json()["id"])


def export_csv(api: httpx.Client, **params: Any) -> list[dict[str, str]]:
    response = api.get(EXPORT, params=params)
    assert response.status_code == 200, response.text
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == EXPORT_COLUMNS
    return list(reader)


# -- importing the sample files --------------------------------------------------------------------------

# file -> (counts, {(email, subscription name): (status, source, timestamp)}) it must leave behind.
SAMPLE_OUTCOMES: dict[str, tuple[dict[str, int], dict[tuple[str, str], tuple[str, str | None, str | None]]]] = {
    "commprefs.csv": (
        counts(rows=5, applied=5),
        {
            ("ada@example.com", "Marketing Information"): (
                "SUBSCRIBED",
                "Conference sign-up sheet",
                "2023-05-17T09:30:00.000Z",
            ),
            ("ada@example.com", "One to One"): ("UNSUBSCRIBED", "Public status API", "2024-01-08T14:02:11.000Z"),
            ("ada@example.com", "Customer Service Communication"): ("NOT_SPECIFIED", None, None),
            ("grace@example.com", "Marketing Information"): (
                "UNSUBSCRIBED",
                "Preference page",
                "2022-11-30T08:00:00.000Z",
            ),
            ("linus@example.org", "Marketing Information"): ("UNSUBSCRIBED", None, None),
            ("linus@example.org", "One to One"): ("UNSUBSCRIBED", None, None),
            ("margaret@example.org", "Customer Service Communication"): (
                "SUBSCRIBED",
                "CRM sync",
                "2024-02-29T10:15:00.000Z",
            ),
        },
    ),
    "hubspot-contacts.csv": (
        counts(rows=4, applied=4),
        {
            ("ada@example.com", "Marketing Information"): (
                "UNSUBSCRIBED",
                "Imported from HubSpot",
                "2022-06-14T16:02:00.000Z",
            ),
            ("ada@example.com", "One to One"): ("NOT_SPECIFIED", None, None),
            ("grace@example.com", "Customer Service Communication"): ("UNSUBSCRIBED", None, None),
            ("linus@example.org", "Customer Service Communication"): (
                "UNSUBSCRIBED",
                "Imported from HubSpot",
                "2021-12-24T18:45:00.000Z",
            ),
            ("linus@example.org", "One to One"): ("UNSUBSCRIBED", "Imported from HubSpot", "2021-12-24T18:45:00.000Z"),
            ("linus@example.org", "Marketing Information"): ("NOT_SPECIFIED", None, None),
            ("margaret@example.org", "Marketing Information"): ("NOT_SPECIFIED", None, None),
        },
    ),
    "mailchimp-subscribed.csv": (
        counts(rows=3, applied=3),
        {
            ("ada@example.com", "Marketing Information"): (
                "SUBSCRIBED",
                "Imported from Mailchimp",
                "2020-04-02T17:24:40.000Z",
            ),
            ("barbara@example.net", "Marketing Information"): (
                "SUBSCRIBED",
                "Imported from Mailchimp",
                "2019-10-12T08:03:10.000Z",
            ),
            ("edsger@example.net", "Marketing Information"): (
                "SUBSCRIBED",
                "Imported from Mailchimp",
                "2018-06-30T21:45:00.000Z",
            ),
            ("ada@example.com", "One to One"): ("NOT_SPECIFIED", None, None),
        },
    ),
    "mailchimp-unsubscribed.csv": (
        counts(rows=2, applied=2),
        {
            ("grace@example.com", "Marketing Information"): (
                "UNSUBSCRIBED",
                "Imported from Mailchimp",
                "2021-03-04T09:15:02.000Z",
            ),
            ("alan@example.org", "Marketing Information"): (
                "UNSUBSCRIBED",
                "Imported from Mailchimp",
                "2020-11-11T11:11:11.000Z",
            ),
        },
    ),
    "mailchimp-cleaned.csv": (
        counts(rows=1, applied=1),
        {
            ("old-address@example.com", "Marketing Information"): (
                "UNSUBSCRIBED",
                "Imported from Mailchimp",
                "2022-08-19T03:00:00.000Z",
            ),
        },
    ),
}


def assert_sample_applied(api: httpx.Client, sample: str) -> None:
    _, expected = SAMPLE_OUTCOMES[sample]
    for (email, name), (status, source, timestamp) in expected.items():
        found = v4_statuses(api, email)[name]
        assert found["status"] == status, (email, name, found)
        if source is not None:
            assert (found["source"], found["timestamp"]) == (source, timestamp), (email, name, found)


@pytest.mark.parametrize("sample", list(SAMPLE_OUTCOMES))
def test_each_sample_file_imports_as_the_raw_body(portal: PortalFixture, sample: str) -> None:
    api = portal.client()
    started = post_import(api, (SAMPLES / sample).read_bytes(), fileName=sample)
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"{IMPORTS}/{job['id']}"
    assert job["id"].startswith("imp_")
    assert job["state"] in ("PENDING", "PROCESSING", "COMPLETE")
    assert (job["fileName"], job["dryRun"], job["error"]) == (sample, False, None)
    assert set(job) == {
        "id",
        "state",
        "format",
        "fileName",
        "dryRun",
        "counts",
        "error",
        "createdAt",
        "startedAt",
        "completedAt",
        "links",
    }
    assert set(job["counts"]) == set(NO_COUNTS)
    assert job["links"] == {"self": f"{IMPORTS}/{job['id']}", "rejects": f"{IMPORTS}/{job['id']}/rejects"}
    done = wait_for(api, job)
    assert done["state"] == "COMPLETE", done
    assert done["counts"] == SAMPLE_OUTCOMES[sample][0]
    assert done["format"] == sample.split("-")[0].removesuffix(".csv")
    assert done["startedAt"] and done["completedAt"] and done["createdAt"] <= done["completedAt"]
    assert_sample_applied(api, sample)


def test_a_multipart_upload_imports_like_the_raw_body(portal: PortalFixture) -> None:
    api = portal.client()
    content = (SAMPLES / "commprefs.csv").read_bytes()
    started = api.post(IMPORTS, files={"file": ("commprefs.csv", content, "text/csv")}, params={"fileName": "mp"})
    assert started.status_code == 202, started.text
    assert started.headers["location"] == started.json()["links"]["self"]
    done = wait_for(api, started.json())
    assert (done["state"], done["fileName"], done["counts"]) == ("COMPLETE", "mp", counts(rows=5, applied=5))
    assert_sample_applied(api, "commprefs.csv")
    again = run_import(api, content)  # the same file again changes nothing
    assert again["counts"] == counts(rows=5, unchanged=5)


def test_imported_changes_keep_the_files_time_source_and_reasons_in_history(portal: PortalFixture) -> None:
    api = portal.client()
    subscribed = run_import(api, (SAMPLES / "mailchimp-subscribed.csv").read_bytes())
    unsubscribed = run_import(api, (SAMPLES / "mailchimp-unsubscribed.csv").read_bytes())
    (ada,) = history(api, "ada@example.com")
    assert (ada["newStatus"], ada["legalBasis"], ada["source"]) == (
        "SUBSCRIBED",
        "CONSENT_WITH_NOTICE",
        "Imported from Mailchimp",
    )
    assert ada["legalBasisExplanation"] == (
        "Opted in through Mailchimp on 2020-04-02 17:20:11 from 203.0.113.7 "
        "confirmed 2020-04-02 17:24:40 from 203.0.113.7"
    )
    assert ada["occurredAt"] == "2020-04-02T17:24:40.000Z"
    assert ada["import"]["id"] == subscribed["id"] and ada["import"]["recordedAt"] > ada["occurredAt"]
    (grace,) = history(api, "grace@example.com")
    assert grace["reason"] == "I no longer want to receive these emails (campaign 'March newsletter')"
    assert grace["import"]["id"] == unsubscribed["id"]
    (alan,) = history(api, "alan@example.org")
    assert alan["reason"] == "Other: Too many emails"


def test_a_dry_run_counts_everything_and_writes_nothing(portal: PortalFixture) -> None:
    api = portal.client()
    content = (SAMPLES / "commprefs.csv").read_bytes()
    started = post_import(api, content, dryRun="true")
    assert started.status_code == 202 and started.json()["dryRun"] is True
    done = wait_for(api, started.json())
    assert (done["state"], done["dryRun"], done["counts"]) == ("COMPLETE", True, counts(rows=5, applied=5))
    assert portal.events() == []
    assert {s["status"] for s in v4_statuses(api, "ada@example.com").values()} == {"NOT_SPECIFIED"}
    assert wide_statuses(api, "linus@example.org") == []
    assert export_csv(api) == []
    assert run_import(api, content)["counts"] == counts(rows=5, applied=5)  # the real run still has it all to do


BAD_ROWS = (
    "email,subscription_name,status,timestamp,legal_basis\n"  # line 1
    "good@example.com,Marketing Information,SUBSCRIBED,2024-01-01T00:00:00Z,\n"  # 2
    "not an address,Marketing Information,SUBSCRIBED,,\n"  # 3
    "status@example.com,Marketing Information,MAYBE,,\n"  # 4
    "\n"  # 5: blank, skipped
    "future@example.com,Marketing Information,UNSUBSCRIBED,2999-01-01T00:00:00Z,\n"  # 6
    '"multi@example.com","Two\nlines",UNSUBSCRIBED,,\n'  # 7-8: unknown subscription, spans two lines
    "short@example.com,Marketing Information\n"  # 9: too few fields
    "basis@example.com,Marketing Information,SUBSCRIBED,,BECAUSE\n"  # 10
    "nosub@example.com,Nonexistent,UNSUBSCRIBED,,\n"  # 11
    "last@example.com,One to One,UNSUBSCRIBED,,\n"  # 12
)


def test_bad_rows_are_rejected_with_their_line_and_the_rest_applies(portal: PortalFixture) -> None:
    api = portal.client()
    done = run_import(api, BAD_ROWS.encode())
    assert done["counts"] == counts(rows=9, rejected=7, applied=2)
    assert v4_statuses(api, "good@example.com")["Marketing Information"]["status"] == "SUBSCRIBED"
    assert v4_statuses(api, "last@example.com")["One to One"]["status"] == "UNSUBSCRIBED"
    assert {e["subscriber"] for e in portal.events()} == {"good@example.com", "last@example.com"}
    response = api.get(done["links"]["rejects"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="{done["id"]}-rejects.csv"'
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["line", "reason", "email", "subscription_name", "status", "timestamp", "legal_basis"]
    by_line = {int(r[0]): r for r in rows[1:]}
    assert sorted(by_line) == [3, 4, 6, 7, 9, 10, 11]
    assert by_line[3][2:] == ["not an address", "Marketing Information", "SUBSCRIBED", "", ""]
    assert "email" in by_line[3][1].lower() or "address" in by_line[3][1].lower()
    assert "MAYBE" in by_line[4][1]
    assert "future" in by_line[6][1]
    assert by_line[7][2:4] == ["multi@example.com", "Two\nlines"]
    assert "field" in by_line[9][1] and by_line[9][2] == "short@example.com"
    assert "BECAUSE" in by_line[10][1]
    assert "Nonexistent" in by_line[11][1]


def test_a_fixed_rejects_file_imports(portal: PortalFixture) -> None:
    """The rejects CSV is importable as it is once the bad cells are fixed (line/reason are ignored)."""
    api = portal.client()
    first = run_import(api, b"email,status,subscription_name\nfix@example.com,SOMETIMES,Marketing Information\n")
    assert first["counts"] == counts(rows=1, rejected=1)
    header, row = csv.reader(io.StringIO(api.get(first["links"]["rejects"]).text))
    assert header == ["line", "reason", "email", "status", "subscription_name"] and row[3] == "SOMETIMES"
    row[3] = "UNSUBSCRIBED"
    fixed_file = io.StringIO()
    csv.writer(fixed_file).writerows([header, row])
    fixed = run_import(api, fixed_file.getvalue().encode())
    assert fixed["counts"] == counts(rows=1, applied=1)
    assert v4_statuses(api, "fix@example.com")["Marketing Information"]["status"] == "UNSUBSCRIBED"


def test_imports_are_listed_newest_first(portal: PortalFixture) -> None:
    api = portal.client()
    assert api.get(IMPORTS).json() == {"results": []}
    ids = [run_import(api, (SAMPLES / name).read_bytes())["id"] for name in ("commprefs.csv", "hubspot-contacts.csv")]
    time.sleep(0.01)
    ids.append(run_import(api, (SAMPLES / "mailchimp-cleaned.csv").read_bytes(), dryRun="true")["id"])
    listed = api.get(IMPORTS)
    assert listed.status_code == 200
    results = listed.json()["results"]
    assert [j["id"] for j in results] == ids[::-1]
    assert [j["format"] for j in results] == ["mailchimp", "hubspot", "commprefs"]
    assert [j["state"] for j in results] == ["COMPLETE"] * 3
    assert api.get(IMPORTS, params={"limit": 1}).json()["results"][0]["id"] == ids[-1]


# -- refusals: HubSpot-shaped, never a 500, nothing written ------------------------------------------------


def assert_nothing_written(api: httpx.Client, portal: PortalFixture) -> None:
    assert api.get(IMPORTS).json() == {"results": []}
    assert portal.events() == []
    assert export_csv(api) == []


@pytest.mark.parametrize(
    ("content", "params", "field", "code"),
    [
        pytest.param(b"", {}, "body", "REQUIRED", id="empty-body"),
        pytest.param(b"email,status,subscription\n", {"format": "xml"}, "format", "INVALID_ENUM", id="unknown-format"),
        pytest.param(b"name,phone\nAda,123\n", {}, "body", "INVALID_FILE", id="header-of-no-format"),
        pytest.param(b"\n\n", {}, "body", "INVALID_FILE", id="blank-lines-only"),
        pytest.param(
            b"email,subscription_name\na@example.com,Marketing Information\n",
            {"format": "commprefs"},
            "body",
            "INVALID_FILE",
            id="commprefs-without-status",
        ),
        pytest.param(
            (SAMPLES / "mailchimp-subscribed.csv").read_bytes(),
            {"subscription": "No such list"},
            "body",
            "INVALID_FILE",
            id="mailchimp-subscription-naming-nothing",
        ),
        pytest.param(
            (SAMPLES / "mailchimp-subscribed.csv").read_bytes(),
            {"subscription": "999999"},
            "body",
            "INVALID_FILE",
            id="mailchimp-unknown-subscription-id",
        ),
        pytest.param(
            b"Email,Opted out of email: Nope,Opted out of email: Marketing Information\na@example.com,true,true\n",
            {},
            "body",
            "INVALID_FILE",
            id="hubspot-unknown-subscription-column",
        ),
        pytest.param(
            b"Email,First Name\na@example.com,Ada\n",
            {"format": "hubspot"},
            "body",
            "INVALID_FILE",
            id="hubspot-without-opt-out-columns",
        ),
        pytest.param(b"email,status\n", {"dryRun": "perhaps"}, "dryRun", None, id="bad-dry-run"),
    ],
)
def test_a_file_that_cannot_be_imported_is_a_400_and_writes_nothing(
    portal: PortalFixture, content: bytes, params: dict[str, str], field: str, code: str | None
) -> None:
    api = portal.client()
    body = assert_hubspot_error(post_import(api, content, **params), 400, field, code)
    assert body["category"] == "VALIDATION_ERROR"
    assert_nothing_written(api, portal)


def test_the_400_names_what_is_wrong(portal: PortalFixture) -> None:
    api = portal.client()
    hubspot = b"Email,Opted out of email: Nope\na@example.com,true\n"
    assert "Nope" in assert_hubspot_error(post_import(api, hubspot), 400)["message"]
    mailchimp = (SAMPLES / "mailchimp-subscribed.csv").read_bytes()
    assert (
        "No such list" in assert_hubspot_error(post_import(api, mailchimp, subscription="No such list"), 400)["message"]
    )
    assert "format" in assert_hubspot_error(post_import(api, b"a,b\n1,2\n"), 400)["message"]


def test_multipart_without_a_file_part_is_a_400(portal: PortalFixture) -> None:
    api = portal.client()
    response = api.post(IMPORTS, files={"upload": ("a.csv", b"email,status\n", "text/csv")})
    assert_hubspot_error(response, 400, "file", "REQUIRED")
    empty_part = api.post(IMPORTS, files={"file": ("a.csv", b"", "text/csv")})
    assert_hubspot_error(empty_part, 400, "body", "REQUIRED")
    assert_nothing_written(api, portal)


def test_unknown_and_other_portals_imports_are_404(portal: PortalFixture) -> None:
    api = portal.client()
    for path in (f"{IMPORTS}/imp_0000000000", f"{IMPORTS}/imp_0000000000/rejects", f"{IMPORTS}/nonsense"):
        body = assert_hubspot_error(api.get(path), 404, "importId")
        assert body["category"] == "OBJECT_NOT_FOUND"
    other = make_portal(portal.server)
    theirs = run_import(other.client(), BAD_ROWS.encode())
    for path in (theirs["links"]["self"], theirs["links"]["rejects"]):
        assert_hubspot_error(api.get(path), 404, "importId")
        assert other.client().get(path).status_code == 200
    assert api.get(IMPORTS).json() == {"results": []}


def test_imports_need_the_admin_scope(portal: PortalFixture) -> None:
    mine = run_import(portal.client(), (SAMPLES / "commprefs.csv").read_bytes())
    events = len(portal.events())
    for scopes in ([Scope.READ_WRITE, Scope.BATCH_READ, Scope.BATCH_WRITE], [Scope.WRITE]):
        api = portal.client(portal.token_with(*scopes))
        content = (SAMPLES / "commprefs.csv").read_bytes()
        for response in (
            post_import(api, content),
            api.post(IMPORTS, files={"file": ("a.csv", content, "text/csv")}),
            api.get(IMPORTS),
            api.get(mine["links"]["self"]),
            api.get(mine["links"]["rejects"]),
        ):
            assert assert_hubspot_error(response, 403)["category"] == "MISSING_SCOPES"
    assert [j["id"] for j in portal.client().get(IMPORTS).json()["results"]] == [mine["id"]]
    assert len(portal.events()) == events
    anonymous = httpx.Client(base_url=portal.server.base_url)
    assert anonymous.post(IMPORTS, content=b"email,status\n").status_code == 401
    anonymous.close()


@pytest.fixture
def capped(server: Server, tmp_path: Path) -> Iterator[PortalFixture]:
    """A portal on a server of its own that takes import files of at most 1,000 bytes."""
    with database_url(server.kind, tmp_path) as url, run_server(url, server.kind, import_max_bytes=1000) as small:
        made = make_portal(small)
        yield made
        for client in made._clients:
            client.close()


def test_a_file_over_the_cap_is_a_413_and_writes_nothing(capped: PortalFixture) -> None:
    api = capped.client()
    row = "cap{}@example.com,Marketing Information,UNSUBSCRIBED\n"
    big = ("email,subscription_name,status\n" + "".join(row.format(i) for i in range(40))).encode()
    assert len(big) > 1000
    declared = post_import(api, big)
    assert assert_hubspot_error(declared, 413)["category"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while the body streams in
        for start in range(0, len(big), 100):
            yield big[start : start + 100]

    with httpx.Client(base_url=capped.server.base_url, headers={"Authorization": f"Bearer {capped.token}"}) as raw:
        streamed = raw.post(IMPORTS, content=chunks(), headers={"content-type": "text/csv"})
        assert "content-length" not in streamed.request.headers
        assert assert_hubspot_error(streamed, 413)["category"] == "PAYLOAD_TOO_LARGE"
    multipart = api.post(IMPORTS, files={"file": ("big.csv", big, "text/csv")})
    assert_hubspot_error(multipart, 413)
    assert_nothing_written(api, capped)
    small = big[:900].rsplit(b"\n", 1)[0] + b"\n"  # whole rows, under the cap
    assert run_import(api, small)["counts"]["applied"] == small.count(b"\n") - 1


# -- the status export ------------------------------------------------------------------------------------


@pytest.fixture
def exported_state(portal: PortalFixture) -> dict[str, Any]:
    """Statuses and opt-outs written through v4, across the default brand and a second one."""
    api = portal.client()
    brand, trail = make_brand(api, "Outdoor", "Trail news")
    one_to_one = portal.definitions["One to One"]
    service = portal.definitions["Customer Service Communication"]
    set_status(
        api,
        "a@example.com",
        portal.marketing,
        "SUBSCRIBED",
        legalBasis="CONSENT_WITH_NOTICE",
        legalBasisExplanation="Ticked the box, 2024",
    )
    set_status(api, "a@example.com", one_to_one, "UNSUBSCRIBED")
    set_status(api, "b@example.com", trail, "UNSUBSCRIBED")
    unsubscribe_all(api, "c@example.com")
    unsubscribe_all(api, "d@example.com", businessUnitId=brand)
    set_status(api, "e@example.com", service, "SUBSCRIBED")
    unsubscribe_all(api, "g@example.com", businessUnitId=0)
    return {"brand": brand, "trail": trail, "one_to_one": one_to_one, "service": service}


def subscription_row(api: httpx.Client, email: str, name: str, legal: tuple[str, str] = ("", "")) -> dict[str, str]:
    """The export's CSV row for `email`'s stored status of `name`, as v4 shows it."""
    found = v4_statuses(api, email)[name]
    return {
        "email": email,
        "scope": "SUBSCRIPTION",
        "business_unit_id": str(found["businessUnitId"]),
        "subscription_id": str(found["subscriptionId"]),
        "subscription_name": name,
        "status": found["status"],
        "legal_basis": legal[0],
        "legal_basis_explanation": legal[1],
        "timestamp": found["timestamp"],
        "source": found["source"],
    }


def wide_row(api: httpx.Client, email: str, **params: Any) -> dict[str, str]:
    (found,) = wide_statuses(api, email, **params)
    brand_wide = found["wideStatusType"] == "BUSINESS_UNIT_WIDE"
    return {
        "email": email,
        "scope": found["wideStatusType"],
        "business_unit_id": str(found["businessUnitId"]) if brand_wide else "",
        "subscription_id": "",
        "subscription_name": "",
        "status": found["status"],
        "legal_basis": "",
        "legal_basis_explanation": "",
        "timestamp": found["timestamp"],
        "source": "Public status API",
    }


def expected_rows(portal: PortalFixture, state: dict[str, Any]) -> dict[str, dict[str, str]]:
    api = portal.client()
    rows = {
        "a-marketing": subscription_row(
            api, "a@example.com", "Marketing Information", ("CONSENT_WITH_NOTICE", "Ticked the box, 2024")
        ),
        "a-one-to-one": subscription_row(api, "a@example.com", "One to One"),
        "b-trail": subscription_row(api, "b@example.com", "Trail news"),
        "e-service": subscription_row(api, "e@example.com", "Customer Service Communication"),
        "c-portal": wide_row(api, "c@example.com"),
        "d-brand": wide_row(api, "d@example.com", businessUnitId=state["brand"]),
        "g-brand-0": wide_row(api, "g@example.com", businessUnitId=0),
    }
    assert rows["c-portal"]["scope"] == "PORTAL_WIDE" and rows["d-brand"]["business_unit_id"] == str(state["brand"])
    assert rows["g-brand-0"]["scope"] == "BUSINESS_UNIT_WIDE" and rows["g-brand-0"]["business_unit_id"] == "0"
    return rows


def ordered(rows: dict[str, dict[str, str]], *keys: str) -> list[dict[str, str]]:
    """Subscription rows by (email, subscription id), then opt-outs from all by email."""
    chosen = [rows[k] for k in keys]
    statuses = sorted(
        (r for r in chosen if r["scope"] == "SUBSCRIPTION"), key=lambda r: (r["email"], int(r["subscription_id"]))
    )
    wide = sorted((r for r in chosen if r["scope"] != "SUBSCRIPTION"), key=lambda r: r["email"])
    return statuses + wide


def test_the_export_holds_every_stored_status_and_opt_out(
    portal: PortalFixture, exported_state: dict[str, Any]
) -> None:
    api = portal.client()
    rows = expected_rows(portal, exported_state)
    response = api.get(EXPORT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == f'attachment; filename="statuses-{portal.id}.csv"'
    assert response.text.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    assert export_csv(api) == ordered(rows, *rows)
    assert export_csv(api, format="csv") == ordered(rows, *rows)


def test_the_jsonl_export_has_the_same_rows_in_camel_case(
    portal: PortalFixture, exported_state: dict[str, Any]
) -> None:
    api = portal.client()
    by_key = expected_rows(portal, exported_state)
    rows = ordered(by_key, *by_key)
    response = api.get(EXPORT, params={"format": "jsonl", "suppressedOnly": "true"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == f'attachment; filename="statuses-{portal.id}-suppressed.jsonl"'
    assert response.text.endswith("\n")
    found = [json.loads(line) for line in response.text.splitlines()]

    def as_json(row: dict[str, str]) -> dict[str, Any]:
        return {
            "email": row["email"],
            "scope": row["scope"],
            "businessUnitId": int(row["business_unit_id"]) if row["business_unit_id"] else None,
            "subscriptionId": int(row["subscription_id"]) if row["subscription_id"] else None,
            "subscriptionName": row["subscription_name"] or None,
            "status": row["status"],
            "legalBasis": row["legal_basis"] or None,
            "legalBasisExplanation": row["legal_basis_explanation"] or None,
            "timestamp": row["timestamp"],
            "source": row["source"],
        }

    assert found == [as_json(r) for r in rows if r["status"] == "UNSUBSCRIBED"]
    everything = api.get(EXPORT, params={"format": "jsonl"}).text.splitlines()
    assert [json.loads(line) for line in everything] == [as_json(r) for r in rows]


def test_export_filters(portal: PortalFixture, exported_state: dict[str, Any]) -> None:
    api = portal.client()
    rows = expected_rows(portal, exported_state)
    suppressed = [k for k, r in rows.items() if r["status"] == "UNSUBSCRIBED"]
    assert sorted(suppressed) == ["a-one-to-one", "b-trail", "c-portal", "d-brand", "g-brand-0"]
    response = api.get(EXPORT, params={"suppressedOnly": "true"})
    assert response.headers["content-disposition"] == f'attachment; filename="statuses-{portal.id}-suppressed.csv"'
    assert export_csv(api, suppressedOnly="true") == ordered(rows, *suppressed)
    # A subscription: its rows, the portal-wide opt-outs and its own brand's; never another brand's.
    marketing = ordered(rows, "a-marketing", "c-portal", "g-brand-0")
    assert export_csv(api, subscriptionId=portal.marketing) == marketing
    assert export_csv(api, subscriptionId=portal.marketing, suppressedOnly="true") == marketing[1:]
    assert export_csv(api, subscriptionId=exported_state["trail"]) == ordered(rows, "b-trail", "c-portal", "d-brand")
    assert export_csv(api, subscriptionId=exported_state["service"]) == ordered(
        rows, "e-service", "c-portal", "g-brand-0"
    )
    # A brand: its subscriptions' rows, the portal-wide opt-outs and its own.
    assert export_csv(api, businessUnitId=exported_state["brand"]) == ordered(rows, "b-trail", "c-portal", "d-brand")
    assert export_csv(api, businessUnitId=0) == ordered(
        rows, "a-marketing", "a-one-to-one", "e-service", "c-portal", "g-brand-0"
    )
    assert export_csv(api, businessUnitId=0, suppressedOnly="true") == ordered(
        rows, "a-one-to-one", "c-portal", "g-brand-0"
    )
    both = export_csv(api, businessUnitId=exported_state["brand"], subscriptionId=exported_state["trail"])
    assert both == ordered(rows, "b-trail", "c-portal", "d-brand")


def test_export_scopes(portal: PortalFixture, exported_state: dict[str, Any]) -> None:
    full = portal.client().get(EXPORT).text
    batch_reader = portal.client(portal.token_with(Scope.BATCH_READ))
    allowed = batch_reader.get(EXPORT)
    assert allowed.status_code == 200 and allowed.text == full
    assert batch_reader.get(EXPORT, params={"format": "jsonl", "subscriptionId": portal.marketing}).status_code == 200
    for scopes in ([Scope.READ], [Scope.READ_WRITE], [Scope.BATCH_WRITE]):
        refused = portal.client(portal.token_with(*scopes)).get(EXPORT)
        assert assert_hubspot_error(refused, 403)["category"] == "MISSING_SCOPES"
        assert "a@example.com" not in refused.text


def test_export_of_unknown_subscription_or_brand_is_404(portal: PortalFixture, exported_state: dict[str, Any]) -> None:
    api = portal.client()
    other = make_portal(portal.server)
    cases = [
        ({"subscriptionId": 999_999}, "subscriptionId"),
        ({"subscriptionId": other.marketing}, "subscriptionId"),
        ({"businessUnitId": 999_999}, "businessUnitId"),
        ({"subscriptionId": exported_state["trail"], "businessUnitId": 0}, "subscriptionId"),
    ]
    for params, field in cases:
        body = assert_hubspot_error(api.get(EXPORT, params=params), 404, field)
        assert body["category"] == "OBJECT_NOT_FOUND"
    for params, field in (({"format": "xml"}, "format"), ({"subscriptionId": "x"}, "subscriptionId")):
        assert_hubspot_error(api.get(EXPORT, params=params), 400, field)


def test_the_export_never_shows_another_portals_rows(portal: PortalFixture, exported_state: dict[str, Any]) -> None:
    other = make_portal(portal.server)
    theirs = other.client()
    set_status(theirs, "a@example.com", other.marketing, "UNSUBSCRIBED")
    set_status(theirs, "other.only@example.com", other.marketing, "SUBSCRIBED")
    unsubscribe_all(theirs, "other.wide@example.com")
    mine = export_csv(portal.client())
    assert {r["email"] for r in mine} == {f"{c}@example.com" for c in "abcdeg"}
    assert {r["subscription_id"] for r in mine} - {""} <= {
        str(i) for i in [*portal.definitions.values(), exported_state["trail"]]
    }
    assert sorted((r["subscription_name"], r["status"]) for r in mine if r["email"] == "a@example.com") == [
        ("Marketing Information", "SUBSCRIBED"),
        ("One to One", "UNSUBSCRIBED"),
    ]
    assert [(r["email"], r["scope"], r["status"]) for r in export_csv(theirs)] == [
        ("a@example.com", "SUBSCRIPTION", "UNSUBSCRIBED"),
        ("other.only@example.com", "SUBSCRIPTION", "SUBSCRIBED"),
        ("other.wide@example.com", "PORTAL_WIDE", "UNSUBSCRIBED"),
    ]


def test_an_export_imports_into_another_portal(portal: PortalFixture, exported_state: dict[str, Any]) -> None:
    """The CSV is commprefs' own import format; subscriptions are matched by name."""
    other = make_portal(portal.server)
    theirs = other.client()
    make_brand(theirs, "Outdoor", "Trail news")
    content = portal.client().get(EXPORT, params={"businessUnitId": 0}).content
    done = run_import(theirs, content)
    assert done["counts"] == counts(rows=5, applied=5)

    def essence(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
        fields = (
            "email",
            "scope",
            "business_unit_id",
            "subscription_name",
            "status",
            "legal_basis",
            "timestamp",
            "source",
        )
        return sorted(tuple(r[f] for f in fields) for r in rows)

    assert essence(export_csv(theirs)) == essence(export_csv(portal.client(), businessUnitId=0))


def test_a_large_export_streams_in_chunks_and_parses_completely(portal: PortalFixture) -> None:
    api = portal.client()
    total = 3000
    addresses = [f"bulk{n:05d}@example.com" for n in range(total)]
    for start in range(0, total, 1000):
        inputs = [
            {
                "subscriberIdString": a,
                "subscriptionId": portal.marketing,
                "statusState": "UNSUBSCRIBED" if n % 3 == 0 else "SUBSCRIBED",
                "channel": "EMAIL",
            }
            for n, a in enumerate(addresses[start : start + 1000], start=start)
        ]
        written = api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs})
        assert written.status_code == 200, written.text
    # A client without the contract hook, which would read the whole body before the test sees it.
    raw = httpx.Client(base_url=portal.server.base_url, headers={"Authorization": f"Bearer {portal.token}"}, timeout=30)
    chunks: list[bytes] = []
    with raw.stream("GET", EXPORT) as response:
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        chunks.extend(response.iter_raw())
    assert len(chunks) > 1
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert [r["email"] for r in rows] == addresses
    assert sum(r["status"] == "UNSUBSCRIBED" for r in rows) == total // 3
    with raw.stream("GET", EXPORT, params={"format": "jsonl", "suppressedOnly": "true"}) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    raw.close()
    assert [r["email"] for r in lines] == addresses[::3]
