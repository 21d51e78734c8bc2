"""`commprefs import` as a real subprocess on both stores, checked the way a user checks it: the
summary line, the rejects file, and what the v4, v3 and history APIs then show."""

import csv
import re
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.api.test_history import history
from tests.conftest import PortalFixture, Server, make_portal
from tests.procs import COMMAND, cli_env, run_cli

SAMPLES = Path(__file__).resolve().parents[2] / "examples" / "imports"
V4 = "/communication-preferences/v4"
V3 = "/communication-preferences/v3"
EMAIL = {"channel": "EMAIL"}
# commprefs' own import format (what `commprefs export` writes).
HEADER = (
    "email,scope,business_unit_id,subscription_id,subscription_name,status,"
    "legal_basis,legal_basis_explanation,timestamp,source"
)
DEFAULT_NAMES = ("Marketing Information", "Customer Service Communication", "One to One")
# What a user compares between two statuses (subscription ids differ between portals, names do not).
STATE_FIELDS = ("status", "source", "timestamp", "legalBasis", "legalBasisExplanation")

SUMMARY = re.compile(
    r"^(?P<job>imp_[0-9a-f]+): (?P<rows>[\d,]+) rows read; (?P<applied>[\d,]+) changes (?:would be )?applied, "
    r"(?P<unchanged>[\d,]+) already there, (?P<newerKept>[\d,]+) older than commprefs' own, "
    r"(?P<optOutKept>[\d,]+) would have lifted an opt-out, (?P<erased>[\d,]+) for erased addresses; "
    r"(?P<rejected>[\d,]+) rows rejected$",
    re.MULTILINE,
)
COUNT_NAMES = ("rows", "applied", "unchanged", "newerKept", "optOutKept", "erased", "rejected")


# -- running the command ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One `commprefs import`: its exit status, output, and the job id and counts its summary gave."""

    code: int
    stdout: str
    stderr: str
    job_id: str | None
    counts: dict[str, int] | None


def counts(**given: int) -> dict[str, int]:
    """A summary's counts: the ones given, every other one zero."""
    assert set(given) <= set(COUNT_NAMES), given
    return {name: given.get(name, 0) for name in COUNT_NAMES}


def finished(done: subprocess.CompletedProcess[str]) -> Run:
    assert "Traceback" not in done.stderr, done.stderr
    match = SUMMARY.search(done.stdout)
    found = {name: int(match.group(name).replace(",", "")) for name in COUNT_NAMES} if match else None
    return Run(done.returncode, done.stdout, done.stderr, match.group("job") if match else None, found)


def run_import(portal: PortalFixture, file: Path | str, *options: str, cwd: Path) -> Run:
    return finished(
        run_cli(portal.server.store.url, "import", str(file), "--portal", str(portal.id), *options, cwd=cwd)
    )


def imported(portal: PortalFixture, file: Path, *options: str, expect_code: int = 0) -> Run:
    """Import `file` from its own directory and require the exit status and a summary line."""
    run = run_import(portal, file, *options, cwd=file.parent)
    assert run.code == expect_code, f"exit {run.code}\n{run.stdout}\n{run.stderr}"
    assert run.job_id is not None and run.counts is not None, run.stdout
    return run


def sample(name: str, tmp_path: Path) -> Path:
    """A copy of an example file, so that its rejects file would land in tmp_path."""
    return Path(shutil.copy(SAMPLES / name, tmp_path / name))


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


# -- reading back through the APIs --------------------------------------------------------------------


def brand_params(brand: int | None) -> dict[str, str | int]:
    return {**EMAIL, "businessUnitId": brand} if brand is not None else dict(EMAIL)


def v4_statuses(api: httpx.Client, email: str, brand: int | None = None) -> dict[str, dict[str, Any]]:
    """v4's statuses of the portal's own subscriptions, or of a brand's, by name."""
    params = brand_params(brand)
    response = api.get(f"{V4}/statuses/{email}", params=params)
    assert response.status_code == 200, response.text
    # Brands may reuse a name: keep the asked brand's subscriptions (the portal's own by default).
    return {s["subscriptionName"]: s for s in response.json()["results"] if s["businessUnitId"] == (brand or 0)}


def state(status: dict[str, Any]) -> dict[str, Any]:
    return {name: status.get(name) for name in STATE_FIELDS}


def unsubscribed(source: str, timestamp: str) -> dict[str, Any]:
    """An unsubscribe as v4 shows it: no legal basis."""
    return {
        "status": "UNSUBSCRIBED",
        "source": source,
        "timestamp": timestamp,
        "legalBasis": None,
        "legalBasisExplanation": None,
    }


def opt_outs(api: httpx.Client, email: str, brand: int | None = None) -> list[dict[str, Any]]:
    params = brand_params(brand)
    response = api.get(f"{V4}/statuses/{email}/unsubscribe-all", params=params)
    assert response.status_code == 200, response.text
    return [
        {k: r[k] for k in ("wideStatusType", "businessUnitId", "status", "timestamp")}
        for r in response.json()["results"]
    ]


def v3_statuses(api: httpx.Client, email: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"{V3}/status/email/{email}")
    assert response.status_code == 200, response.text
    return {s["name"]: s for s in response.json()["subscriptionStatuses"]}


def change(event: dict[str, Any]) -> tuple[Any, ...]:
    """An event as a user reads it: what changed, to what, from where, when, and by which import."""
    what = event["subscriptionName"] or event["wideStatusType"]
    return (what, event["newStatus"], event["source"], event["occurredAt"], (event["import"] or {}).get("id"))


def untouched(api: httpx.Client, portal: PortalFixture, email: str) -> None:
    """Nothing was ever recorded for the address."""
    assert portal.events(email) == []
    assert {s["status"] for s in v4_statuses(api, email).values()} == {"NOT_SPECIFIED"}
    assert opt_outs(api, email) == []


def job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/commprefs/v1/imports/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def make_brand(api: httpx.Client, definition: str = "Trail news") -> tuple[int, int]:
    """A new brand "Outdoor" with one subscription: the brand's id and the subscription's."""
    brand = api.post("/commprefs/v1/business-units", json={"name": "Outdoor"})
    assert brand.status_code == 201, brand.text
    created = api.post("/commprefs/v1/definitions", json={"name": definition, "businessUnitId": brand.json()["id"]})
    assert created.status_code == 201, created.text
    return int(brand.json()["id"]), int(created.json()["id"])


# -- the example files -------------------------------------------------------------------------------


def test_the_commprefs_example_keeps_its_dates_sources_and_legal_bases(portal: PortalFixture, tmp_path: Path) -> None:
    stale = write(tmp_path / "commprefs.rejects.csv", "line,reason", "9,from an earlier run")
    run = imported(portal, sample("commprefs.csv", tmp_path))
    assert run.counts == counts(rows=5, applied=5)
    assert "rejected rows:" not in run.stdout and not stale.exists()
    api = portal.client()

    ada = v4_statuses(api, "ada@example.com")
    assert state(ada["Marketing Information"]) == {
        "status": "SUBSCRIBED",
        "source": "Conference sign-up sheet",
        "timestamp": "2023-05-17T09:30:00.000Z",
        "legalBasis": "CONSENT_WITH_NOTICE",
        "legalBasisExplanation": "Signed up at the 2023 conference stand",
    }
    assert state(ada["One to One"]) == unsubscribed("Public status API", "2024-01-08T14:02:11.000Z")
    assert ada["Customer Service Communication"]["status"] == "NOT_SPECIFIED"
    grace = v4_statuses(api, "grace@example.com")
    assert state(grace["Marketing Information"]) == unsubscribed("Preference page", "2022-11-30T08:00:00.000Z")
    linus = v4_statuses(api, "linus@example.org")
    assert {name: state(s) for name, s in linus.items()} == dict.fromkeys(
        DEFAULT_NAMES, unsubscribed("List-unsubscribe header", "2021-07-01T12:00:00.000Z")
    )
    assert opt_outs(api, "linus@example.org") == [
        {
            "wideStatusType": "PORTAL_WIDE",
            "businessUnitId": 0,
            "status": "UNSUBSCRIBED",
            "timestamp": "2021-07-01T12:00:00.000Z",
        }
    ]
    assert {s["sourceOfStatus"] for s in v3_statuses(api, "linus@example.org").values()} == {"PORTAL_WIDE_STATUS"}
    margaret = v4_statuses(api, "margaret@example.org")["Customer Service Communication"]
    assert state(margaret) == {
        "status": "SUBSCRIBED",
        "source": "CRM sync",
        "timestamp": "2024-02-29T10:15:00.000Z",
        "legalBasis": "PERFORMANCE_OF_CONTRACT",
        "legalBasisExplanation": "Support contract 2024-118",
    }

    assert sorted(change(e) for e in history(api, "ada@example.com")) == [
        ("Marketing Information", "SUBSCRIBED", "Conference sign-up sheet", "2023-05-17T09:30:00.000Z", run.job_id),
        ("One to One", "UNSUBSCRIBED", "Public status API", "2024-01-08T14:02:11.000Z", run.job_id),
    ]
    assert [change(e) for e in history(api, "linus@example.org")] == [
        ("PORTAL_WIDE", "UNSUBSCRIBED", "List-unsubscribe header", "2021-07-01T12:00:00.000Z", run.job_id)
    ]
    (subscribed,) = history(api, "margaret@example.org")
    assert subscribed["legalBasis"] == "PERFORMANCE_OF_CONTRACT" and subscribed["import"]["recordedAt"].endswith("Z")
    assert subscribed["oldStatus"] == "NOT_SPECIFIED"


def test_the_mailchimp_subscribed_example_keeps_the_opt_in_as_consent_with_notice(
    portal: PortalFixture, tmp_path: Path
) -> None:
    run = imported(portal, sample("mailchimp-subscribed.csv", tmp_path))
    assert run.counts == counts(rows=3, applied=3)
    api = portal.client()
    expected = {
        "ada@example.com": (
            "2020-04-02T17:24:40.000Z",
            "Opted in through Mailchimp on 2020-04-02 17:20:11 from 203.0.113.7 confirmed 2020-04-02 17:24:40 "
            "from 203.0.113.7",
        ),
        "barbara@example.net": (
            "2019-10-12T08:03:10.000Z",
            "Opted in through Mailchimp on 2019-10-12 08:00:00 from 198.51.100.23 confirmed 2019-10-12 08:03:10 "
            "from 198.51.100.23",
        ),
        # Never confirmed (single opt-in, no IP): the opt-in time is the consent's time.
        "edsger@example.net": ("2018-06-30T21:45:00.000Z", "Opted in through Mailchimp on 2018-06-30 21:45:00"),
    }
    for email, (timestamp, explanation) in expected.items():
        statuses = v4_statuses(api, email)
        assert state(statuses["Marketing Information"]) == {
            "status": "SUBSCRIBED",
            "source": "Imported from Mailchimp",
            "timestamp": timestamp,
            "legalBasis": "CONSENT_WITH_NOTICE",
            "legalBasisExplanation": explanation,
        }, email
        assert (
            statuses["One to One"]["status"] == statuses["Customer Service Communication"]["status"] == "NOT_SPECIFIED"
        )
        (event,) = history(api, email)
        assert change(event) == (
            "Marketing Information",
            "SUBSCRIBED",
            "Imported from Mailchimp",
            timestamp,
            run.job_id,
        )
        assert (event["legalBasis"], event["legalBasisExplanation"]) == ("CONSENT_WITH_NOTICE", explanation)


def test_the_mailchimp_cleaned_example_goes_into_the_subscription_named_by_id(
    portal: PortalFixture, tmp_path: Path
) -> None:
    one_to_one = portal.definitions["One to One"]
    run = imported(portal, sample("mailchimp-cleaned.csv", tmp_path), "--subscription", str(one_to_one))
    assert run.counts == counts(rows=1, applied=1)
    api = portal.client()
    statuses = v4_statuses(api, "old-address@example.com")
    assert state(statuses["One to One"]) == unsubscribed("Imported from Mailchimp", "2022-08-19T03:00:00.000Z")
    assert statuses["Marketing Information"]["status"] == "NOT_SPECIFIED"
    (event,) = history(api, "old-address@example.com")
    assert change(event) == (
        "One to One",
        "UNSUBSCRIBED",
        "Imported from Mailchimp",
        "2022-08-19T03:00:00.000Z",
        run.job_id,
    )
    assert event["reason"] == "Cleaned in Mailchimp: the address bounced"


def test_mailchimp_unsubscribes_and_hubspot_opt_outs_import_with_their_original_dates_in_the_history(
    portal: PortalFixture, tmp_path: Path
) -> None:
    """The acceptance case: a Mailchimp 'unsubscribed' export and a HubSpot contacts export import
    with their original dates, and the history shows them."""
    mailchimp = imported(portal, sample("mailchimp-unsubscribed.csv", tmp_path))
    assert mailchimp.counts == counts(rows=2, applied=2)
    hubspot = imported(portal, sample("hubspot-contacts.csv", tmp_path))
    # ada: one type; grace: opted out of all; linus: two types; margaret: nothing to say.
    assert hubspot.counts == counts(rows=4, applied=4)
    api = portal.client()
    for run, fmt in ((mailchimp, "mailchimp"), (hubspot, "hubspot")):
        assert run.job_id is not None
        found = job(api, run.job_id)
        assert (found["state"], found["format"], found["dryRun"], found["counts"]) == (
            "COMPLETE",
            fmt,
            False,
            run.counts,
        )

    grace = history(api, "grace@example.com")
    assert sorted(change(e) for e in grace) == [
        (
            "Marketing Information",
            "UNSUBSCRIBED",
            "Imported from Mailchimp",
            "2021-03-04T09:15:02.000Z",
            mailchimp.job_id,
        ),
        ("PORTAL_WIDE", "UNSUBSCRIBED", "Imported from HubSpot", "2020-09-01T07:30:00.000Z", hubspot.job_id),
    ]
    reasons = {e["source"]: e["reason"] for e in grace}
    assert reasons == {
        "Imported from Mailchimp": "I no longer want to receive these emails (campaign 'March newsletter')",
        "Imported from HubSpot": None,
    }
    assert all(e["import"]["recordedAt"] > e["occurredAt"] for e in grace)
    # The opt-out from all governs every type, as HubSpot shows it.
    assert opt_outs(api, "grace@example.com") == [
        {
            "wideStatusType": "PORTAL_WIDE",
            "businessUnitId": 0,
            "status": "UNSUBSCRIBED",
            "timestamp": "2020-09-01T07:30:00.000Z",
        }
    ]
    assert {name: state(s) for name, s in v4_statuses(api, "grace@example.com").items()} == dict.fromkeys(
        DEFAULT_NAMES, unsubscribed("Imported from HubSpot", "2020-09-01T07:30:00.000Z")
    )
    v3 = v3_statuses(api, "grace@example.com")
    assert {(s["status"], s["sourceOfStatus"]) for s in v3.values()} == {("NOT_SUBSCRIBED", "PORTAL_WIDE_STATUS")}

    (alan,) = history(api, "alan@example.org")
    assert change(alan) == (
        "Marketing Information",
        "UNSUBSCRIBED",
        "Imported from Mailchimp",
        "2020-11-11T11:11:11.000Z",
        mailchimp.job_id,
    )
    assert alan["reason"] == "Other: Too many emails"

    ada = v4_statuses(api, "ada@example.com")
    assert state(ada["Marketing Information"]) == unsubscribed("Imported from HubSpot", "2022-06-14T16:02:00.000Z")
    assert ada["One to One"]["status"] == "NOT_SPECIFIED" and opt_outs(api, "ada@example.com") == []
    linus = v4_statuses(api, "linus@example.org")
    for name in ("Customer Service Communication", "One to One"):
        assert state(linus[name]) == unsubscribed("Imported from HubSpot", "2021-12-24T18:45:00.000Z")
    assert linus["Marketing Information"]["status"] == "NOT_SPECIFIED"
    assert sorted(change(e) for e in history(api, "linus@example.org")) == [
        (name, "UNSUBSCRIBED", "Imported from HubSpot", "2021-12-24T18:45:00.000Z", hubspot.job_id)
        for name in ("Customer Service Communication", "One to One")
    ]
    untouched(api, portal, "margaret@example.org")


# -- rejected rows -----------------------------------------------------------------------------------

SHEET_TIME = "2023-05-17T09:30:00Z"


@dataclass(frozen=True)
class SheetRow:
    """A row of a sign-up sheet: a bad one has the words its reason must hold and the cells that fix it."""

    text: str
    reason_words: tuple[str, ...] = ()
    fix: dict[str, str] = field(default_factory=dict)


def sign_up_sheet(brand: int) -> list[SheetRow]:
    def row(email: str, name: str, status: str = "UNSUBSCRIBED", *, unit: str = "0", time: str = SHEET_TIME) -> str:
        return f"{email},SUBSCRIPTION,{unit},,{name},{status},,,{time},Fair sheet"

    return [
        SheetRow(
            "kept@example.com,SUBSCRIPTION,0,,Marketing Information,SUBSCRIBED,CONSENT_WITH_NOTICE,"
            f'"Signed up at the stand,\nsecond day of the fair",{SHEET_TIME},Fair sheet'
        ),
        SheetRow(row("not-an-address", "Marketing Information"), ("not-an-address",), {"email": "fixed@example.com"}),
        SheetRow(
            row("status@example.com", "Marketing Information", "MAYBE"), ("status", "MAYBE"), {"status": "UNSUBSCRIBED"}
        ),
        SheetRow(row("named@example.com", "Weekly Digest"), ("Weekly Digest",), {"subscription_name": "One to One"}),
        SheetRow(row("archived@example.com", "Spring Sale"), ("Spring Sale",), {"subscription_name": "One to One"}),
        SheetRow(
            row("twice@example.com", "One to One", unit=""),
            ("2 brands", "One to One"),
            {"business_unit_id": str(brand)},
        ),
        SheetRow(
            f"unit@example.com,BUSINESS_UNIT_WIDE,99,,,UNSUBSCRIBED,,,{SHEET_TIME},Fair sheet",
            ("business unit 99",),
            {"business_unit_id": str(brand)},
        ),
        SheetRow(
            row("stamp@example.com", "One to One", time="last tuesday"),
            ("last tuesday", "date"),
            {"timestamp": "2023-05-18T10:00:00Z"},
        ),
        SheetRow(
            row("future@example.com", "One to One", time="2999-01-01T00:00:00Z"),
            ("2999", "future"),
            {"timestamp": "2023-05-19T10:00:00Z"},
        ),
        SheetRow(
            "fields@example.com,SUBSCRIPTION,0,,One to One,UNSUBSCRIBED",
            ("6 fields", "header 10"),
            {"timestamp": "2023-05-20T10:00:00Z", "source": "Fair sheet"},
        ),
        SheetRow("wide@example.com,PORTAL_WIDE,,,,UNSUBSCRIBED,,,2021-07-01T12:00:00Z,List-unsubscribe header"),
        SheetRow(
            row("gdpr@example.com", "One to One", "SUBSCRIBED"),
            ("legalBasis", "GDPR"),
            {"legal_basis": "CONSENT_WITH_NOTICE", "legal_basis_explanation": "Ticked the box at the stand"},
        ),
        SheetRow(
            f"basis@example.com,SUBSCRIPTION,0,,One to One,UNSUBSCRIBED,WHEN_ASKED,,{SHEET_TIME},Fair sheet",
            ("legal basis", "WHEN_ASKED"),
            {"legal_basis": ""},
        ),
        SheetRow("kept@example.com,SUBSCRIPTION,0,,One to One,UNSUBSCRIBED,,,2024-01-08T14:02:11Z,Public status API"),
    ]


def with_lines(rows: list[SheetRow]) -> dict[int, SheetRow]:
    """Each row by the physical line it starts on (the header is line 1)."""
    numbered, line = {}, 2
    for row in rows:
        numbered[line] = row
        line += row.text.count("\n") + 1
    return numbered


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_bad_rows_go_to_the_rejects_file_with_their_line_and_reason_and_import_once_fixed(
    portal: PortalFixture, tmp_path: Path
) -> None:
    portal.update(gdpr_enabled=True)
    api = portal.client()
    brand, _ = make_brand(api, "One to One")
    spring = api.post("/commprefs/v1/definitions", json={"name": "Spring Sale"}).json()["id"]
    assert api.post(f"/commprefs/v1/definitions/{spring}/deactivate").status_code == 200
    sheet = with_lines(sign_up_sheet(brand))
    bad = {line: row for line, row in sheet.items() if row.reason_words}
    file = write(tmp_path / "fair.csv", HEADER, *(row.text for row in sheet.values()))

    run = imported(portal, file, expect_code=3)
    assert run.counts == counts(rows=len(sheet), applied=len(sheet) - len(bad), rejected=len(bad))
    rejects_path = tmp_path / "fair.rejects.csv"
    assert f"rejected rows: {rejects_path}\n" in run.stdout
    with rejects_path.open(newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["line", "reason", *HEADER.split(",")]
    rejects = read_csv(rejects_path)
    assert [int(r["line"]) for r in rejects] == sorted(bad)
    for reject in rejects:
        row = bad[int(reject["line"])]
        assert all(w.lower() in reject["reason"].lower() for w in row.reason_words), (
            reject["reason"],
            row.reason_words,
        )
        assert ",".join(reject[c] for c in HEADER.split(",") if reject[c] is not None) == row.text

    kept = v4_statuses(api, "kept@example.com")
    assert kept["Marketing Information"]["legalBasisExplanation"] == "Signed up at the stand,\nsecond day of the fair"
    assert state(kept["One to One"]) == unsubscribed("Public status API", "2024-01-08T14:02:11.000Z")
    assert opt_outs(api, "wide@example.com")[0]["timestamp"] == "2021-07-01T12:00:00.000Z"
    for row in bad.values():
        email = row.text.split(",")[0]
        if email != "not-an-address":
            untouched(api, portal, email)
            assert opt_outs(api, email, brand) == []

    # The person fixes the cells named in each reason and imports the rejects file as it is.
    for reject in rejects:
        reject.update(bad[int(reject["line"])].fix)
    fixed = tmp_path / "fair.fixed.csv"
    with fixed.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["line", "reason", *HEADER.split(",")])
        writer.writeheader()
        writer.writerows(rejects)
    again = imported(portal, fixed)
    assert again.counts == counts(rows=len(bad), applied=len(bad))
    assert not (tmp_path / "fair.fixed.rejects.csv").exists()

    def one_to_one(email: str, brand_id: int | None = None) -> dict[str, Any]:
        return state(v4_statuses(api, email, brand_id)["One to One"])

    assert v4_statuses(api, "fixed@example.com")["Marketing Information"]["status"] == "UNSUBSCRIBED"
    assert v4_statuses(api, "status@example.com")["Marketing Information"]["timestamp"] == "2023-05-17T09:30:00.000Z"
    for email in ("named@example.com", "archived@example.com", "basis@example.com"):
        assert one_to_one(email) == unsubscribed("Fair sheet", "2023-05-17T09:30:00.000Z"), email
    assert one_to_one("twice@example.com", brand) == unsubscribed("Fair sheet", "2023-05-17T09:30:00.000Z")
    assert v4_statuses(api, "twice@example.com")["One to One"]["status"] == "NOT_SPECIFIED"
    assert opt_outs(api, "unit@example.com", brand)[0]["wideStatusType"] == "BUSINESS_UNIT_WIDE"
    assert one_to_one("stamp@example.com")["timestamp"] == "2023-05-18T10:00:00.000Z"
    assert one_to_one("future@example.com")["timestamp"] == "2023-05-19T10:00:00.000Z"
    assert one_to_one("fields@example.com") == unsubscribed("Fair sheet", "2023-05-20T10:00:00.000Z")
    assert one_to_one("gdpr@example.com") == {
        "status": "SUBSCRIBED",
        "source": "Fair sheet",
        "timestamp": "2023-05-17T09:30:00.000Z",
        "legalBasis": "CONSENT_WITH_NOTICE",
        "legalBasisExplanation": "Ticked the box at the stand",
    }
    assert [change(e)[4] for e in history(api, "gdpr@example.com")] == [again.job_id]


def test_the_rejects_file_keeps_the_whole_header_and_every_value_of_a_ragged_row(
    portal: PortalFixture, tmp_path: Path
) -> None:
    short = "short@example.com,SUBSCRIPTION,0,,One to One,UNSUBSCRIBED"
    long = f"long@example.com,SUBSCRIPTION,0,,One to One,UNSUBSCRIBED,,,{SHEET_TIME},Fair, second day"
    run = imported(portal, write(tmp_path / "ragged.csv", HEADER, short, long), expect_code=3)
    assert run.counts == counts(rows=2, rejected=2)
    with (tmp_path / "ragged.rejects.csv").open(newline="", encoding="utf-8") as handle:
        header, *rows = csv.reader(handle)
    assert [row[:2] for row in rows] == [
        ["2", "the row has 6 fields, the header 10"],
        ["3", "the row has 11 fields, the header 10"],
    ]
    assert header == ["line", "reason", *HEADER.split(",")]
    assert [row[2:] for row in rows] == [short.split(","), long.split(",")]


def test_a_fixed_rejects_file_does_not_record_the_rejection_as_the_persons_reason(
    portal: PortalFixture, tmp_path: Path
) -> None:
    # A rejects file as the import writes it (line, reason, the row), its status fixed by hand.
    fixed = write(
        tmp_path / "typo.rejects.csv",
        f"line,reason,{HEADER}",
        f"2,\"status 'UNSUBSCRIBD' is not one of SUBSCRIBED, UNSUBSCRIBED, NOT_SPECIFIED\",typo@example.com,"
        f"SUBSCRIPTION,0,,One to One,UNSUBSCRIBED,,,{SHEET_TIME},Fair sheet",
    )
    assert imported(portal, fixed).counts == counts(rows=1, applied=1)
    (event,) = history(portal.client(), "typo@example.com")
    assert event["newStatus"] == "UNSUBSCRIBED" and event["source"] == "Fair sheet"
    assert event["reason"] is None


# -- the rules: newer changes, opt-outs and erased addresses win ---------------------------------------


def test_an_import_never_overrides_a_newer_change_nor_lifts_an_opt_out(portal: PortalFixture, tmp_path: Path) -> None:
    api = portal.client()
    brand, _ = make_brand(api)
    opted_out = write(
        tmp_path / "2020.csv",
        HEADER,
        "one@example.com,,,,Marketing Information,UNSUBSCRIBED,,,2020-01-01T00:00:00Z,Old list",
        "all@example.com,PORTAL_WIDE,,,,UNSUBSCRIBED,,,2020-01-01T00:00:00Z,Old list",
        f"brand@example.com,BUSINESS_UNIT_WIDE,{brand},,,UNSUBSCRIBED,,,2020-01-01T00:00:00Z,Old list",
    )
    assert imported(portal, opted_out).counts == counts(rows=3, applied=3)
    for subscription, wanted in ((portal.marketing, "SUBSCRIBED"), (portal.definitions["One to One"], "UNSUBSCRIBED")):
        body = {"statusState": wanted, "subscriptionId": subscription, "channel": "EMAIL"}
        assert api.post(f"{V4}/statuses/newer@example.com", json=body).status_code == 200
    kept = ("one@example.com", "all@example.com", "newer@example.com")
    before = {e: (v4_statuses(api, e), v4_statuses(api, e, brand), opt_outs(api, e, brand)) for e in kept}
    events = {e: portal.events(e) for e in kept}
    later = write(
        tmp_path / "2023.csv",
        HEADER,
        # Newer than the opt-outs, yet no SUBSCRIBED lifts one.
        "one@example.com,,,,Marketing Information,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2023-01-01T00:00:00Z,New list",
        "all@example.com,,,,One to One,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2023-01-01T00:00:00Z,New list",
        "all@example.com,PORTAL_WIDE,,,,SUBSCRIBED,,,2023-01-01T00:00:00Z,New list",
        f"brand@example.com,,{brand},,Trail news,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2023-01-01T00:00:00Z,New list",
        # The brand's opt-out does not cover the portal's own subscriptions.
        "brand@example.com,,,,Marketing Information,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2023-01-01T00:00:00Z,New list",
        # Older than what v4 was told since: an older unsubscribe never takes away a newer subscribe,
        # nor an older subscribe a newer unsubscribe.
        "newer@example.com,,,,Marketing Information,UNSUBSCRIBED,,,2023-01-01T00:00:00Z,New list",
        "newer@example.com,,,,One to One,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2023-01-01T00:00:00Z,New list",
    )
    assert imported(portal, later).counts == counts(rows=7, applied=1, optOutKept=4, newerKept=2)
    assert {e: (v4_statuses(api, e), v4_statuses(api, e, brand), opt_outs(api, e, brand)) for e in kept} == before
    assert {e: portal.events(e) for e in kept} == events
    assert v4_statuses(api, "all@example.com")["One to One"]["status"] == "UNSUBSCRIBED"
    assert state(v4_statuses(api, "newer@example.com")["Marketing Information"])["source"] == "Public status API"
    brand_side = v4_statuses(api, "brand@example.com", brand)
    assert state(brand_side["Trail news"]) == unsubscribed("Old list", "2020-01-01T00:00:00.000Z")
    assert opt_outs(api, "brand@example.com", brand)[0]["status"] == "UNSUBSCRIBED"
    assert v4_statuses(api, "brand@example.com")["Marketing Information"]["status"] == "SUBSCRIBED"


def test_an_erased_address_gets_nothing_from_any_format(portal: PortalFixture, tmp_path: Path) -> None:
    api = portal.client()
    for email in ("grace@example.com", "ada@example.com"):
        erased = api.delete(f"/commprefs/v1/subjects/{email}")
        assert erased.status_code == 200 and erased.json()["erased"] is True
    # commprefs.csv: ada twice, grace once; HubSpot: ada and grace once each; Mailchimp: grace once.
    runs = {
        "commprefs.csv": counts(rows=5, applied=2, erased=3),
        "hubspot-contacts.csv": counts(rows=4, applied=2, erased=2),
        "mailchimp-unsubscribed.csv": counts(rows=2, applied=1, erased=1),
    }
    for name, expected in runs.items():
        assert imported(portal, sample(name, tmp_path)).counts == expected, name
    for email in ("grace@example.com", "ada@example.com"):
        assert portal.events(email) == [], email
        assert history(api, email) == []
        record = api.get(f"/commprefs/v1/subjects/{email}").json()
        assert (record["storedStatuses"], record["history"]) == ([], [])
        assert [(w["wideStatusType"], w["source"]) for w in record["wideStatuses"]] == [
            ("PORTAL_WIDE", "Data subject erasure")
        ]
        assert {(s["status"], s["source"]) for s in v4_statuses(api, email).values()} == {
            ("UNSUBSCRIBED", "Data subject erasure")
        }
    assert v4_statuses(api, "margaret@example.org")["Customer Service Communication"]["status"] == "SUBSCRIBED"


def test_a_rejected_row_of_an_erased_address_does_not_bring_the_address_back(
    portal: PortalFixture, tmp_path: Path
) -> None:
    api = portal.client()
    assert api.delete("/commprefs/v1/subjects/gone@example.com").status_code == 200
    file = write(
        tmp_path / "old-list.csv",
        HEADER,
        "gone@example.com,,,,One to One,UNSUBSCRIBED,,,last tuesday,Old list",
        f"gone@example.com,,,,Weekly Digest,UNSUBSCRIBED,,,{SHEET_TIME},Old list",
    )
    assert imported(portal, file, expect_code=3).counts == counts(rows=2, rejected=2)
    assert portal.events("gone@example.com") == []
    assert api.get("/commprefs/v1/subjects/gone@example.com").json()["importRejects"] == []


# -- dry runs and files that cannot be imported --------------------------------------------------------


def test_a_dry_run_writes_nothing_and_running_a_file_again_changes_nothing(
    portal: PortalFixture, tmp_path: Path
) -> None:
    file = write(
        tmp_path / "mixed.csv",
        HEADER,
        "dry@example.com,,,,Marketing Information,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2023-01-01T00:00:00Z,Form",
        "dry@example.com,,,,Marketing Information,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2023-01-01T00:00:00Z,Form",
        "dry@example.com,,,,One to One,NOT_SPECIFIED,,,2023-01-01T00:00:00Z,Form",
        "dry@example.com,PORTAL_WIDE,,,,UNSUBSCRIBED,,,2024-01-01T00:00:00Z,Form",
        "bad@example.com,,,,Nothing Like It,UNSUBSCRIBED,,,2024-01-01T00:00:00Z,Form",
    )
    dry = imported(portal, file, "--dry-run", expect_code=3)
    assert dry.counts == counts(rows=5, applied=2, unchanged=2, rejected=1)
    assert "; 2 changes would be applied," in dry.stdout
    assert [r["line"] for r in read_csv(tmp_path / "mixed.rejects.csv")] == ["6"]
    api = portal.client()
    untouched(api, portal, "dry@example.com")
    assert dry.job_id is not None and job(api, dry.job_id)["dryRun"] is True

    real = imported(portal, file, expect_code=3)
    assert real.counts == dry.counts and "; 2 changes applied," in real.stdout
    events = portal.events()
    assert [(e["subscriber"], e["new_status"]) for e in events] == [
        ("dry@example.com", "SUBSCRIBED"),
        ("dry@example.com", "UNSUBSCRIBED"),
    ]

    again = imported(portal, file, expect_code=3)
    assert again.counts == counts(rows=5, unchanged=4, rejected=1) and "; 0 changes applied," in again.stdout
    assert portal.events() == events
    assert again.job_id not in (dry.job_id, real.job_id)


def test_a_file_that_cannot_be_imported_fails_with_a_clear_message_and_writes_nothing(
    portal: PortalFixture, tmp_path: Path
) -> None:
    cases: dict[str, tuple[Path, tuple[str, ...], tuple[str, ...]]] = {
        "empty": (write(tmp_path / "empty.csv"), (), ("empty", "header")),
        "unknown format": (write(tmp_path / "phones.csv", "name,phone", "Ada,555-0100"), (), ("format", "--format")),
        "HubSpot type the portal lacks": (
            write(
                tmp_path / "contacts.csv",
                "Email,Opted out of email: Weekly Digest,Opted out of email: Marketing Information",
                "hs@example.com,true,true",
            ),
            (),
            ("Weekly Digest", "does not have"),
        ),
        "Mailchimp subscription that does not exist": (
            sample("mailchimp-unsubscribed.csv", tmp_path),
            ("--subscription", "Weekly Digest"),
            ("Weekly Digest", "--subscription"),
        ),
    }

    def attempt(case: tuple[Path, tuple[str, ...], tuple[str, ...]]) -> Run:
        file, options, _ = case
        return run_import(portal, file, *options, cwd=tmp_path)

    with ThreadPoolExecutor(len(cases)) as pool:
        runs = dict(zip(cases, pool.map(attempt, cases.values()), strict=True))
    for name, run in runs.items():
        words = cases[name][2]
        assert run.code == 1, (name, run.stdout, run.stderr)
        assert run.stderr.startswith("Error: ") and all(w in run.stderr for w in words), (name, run.stderr)
        assert run.job_id is None and run.stdout == "", name
    assert list(tmp_path.glob("*.rejects.csv")) == []
    assert portal.events() == []
    api = portal.client()
    jobs = api.get("/commprefs/v1/imports").json()["results"]
    assert len(jobs) == len(cases) and {j["state"] for j in jobs} == {"FAILED"}
    assert all(j["error"] for j in jobs)
    untouched(api, portal, "hs@example.com")


# -- big files and standard input -------------------------------------------------------------------


def test_a_big_file_reports_progress_off_a_terminal(portal: PortalFixture, tmp_path: Path) -> None:
    file = write(
        tmp_path / "big.csv",
        HEADER,
        *(
            f"user{i}@example.com,,,,Marketing Information,UNSUBSCRIBED,,,2022-01-01T00:00:00Z,Bulk"
            for i in range(5000)
        ),
    )
    run = imported(portal, file, "--progress-every", "0")
    assert run.counts == counts(rows=5000, applied=5000)
    progress = [line for line in run.stderr.splitlines() if line.startswith("import:")]
    assert len(progress) == 3 and all("rows/s" in line for line in progress), run.stderr
    assert progress[0].startswith("import: 2,000 rows") and progress[-1].startswith("import: 5,000 rows")
    assert "(100% of the file), 0 rejected" in progress[-1]
    api = portal.client()
    for email in ("user0@example.com", "user4999@example.com"):
        assert state(v4_statuses(api, email)["Marketing Information"]) == unsubscribed(
            "Bulk", "2022-01-01T00:00:00.000Z"
        )


def test_standard_input_imports_and_rejects_next_to_the_working_directory(
    portal: PortalFixture, tmp_path: Path
) -> None:
    text = "\n".join(
        [
            HEADER,
            "piped@example.com,,,,One to One,UNSUBSCRIBED,,,2021-02-03T04:05:06Z,Pipe",
            "piped@example.com,,,,One to One,SOMETIMES,,,2021-02-03T04:05:06Z,Pipe",
        ]
    )
    done = subprocess.run(
        [*COMMAND, "import", "-", "--portal", str(portal.id), "--progress-every", "0"],
        input=text,
        env=cli_env(portal.server.store.url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    run = finished(done)
    assert run.code == 3 and run.counts == counts(rows=2, applied=1, rejected=1), done.stdout + done.stderr
    assert [r["line"] for r in read_csv(tmp_path / "stdin.rejects.csv")] == ["3"]
    assert "import: 2 rows" in run.stderr and "% of the file" not in run.stderr
    api = portal.client()
    assert state(v4_statuses(api, "piped@example.com")["One to One"]) == unsubscribed(
        "Pipe", "2021-02-03T04:05:06.000Z"
    )
    assert run.job_id is not None and job(api, run.job_id)["fileName"] == "-"


# -- export from one portal, import into another --------------------------------------------------------


def build_state(api: httpx.Client, portal: PortalFixture, brand: int, trail: int) -> list[str]:
    """A mix of every kind of state; returns the addresses."""
    one_to_one = portal.definitions["One to One"]

    def post_status(email: str, subscription: int, wanted: str, **extra: str) -> None:
        body = {"statusState": wanted, "subscriptionId": subscription, "channel": "EMAIL", **extra}
        response = api.post(f"{V4}/statuses/{email}", json=body)
        assert response.status_code == 200, response.text

    def opt_out(email: str, **params: Any) -> None:
        assert api.post(f"{V4}/statuses/{email}/unsubscribe-all", params={**EMAIL, **params}).status_code == 200

    basis = {"legalBasis": "CONSENT_WITH_NOTICE", "legalBasisExplanation": "Webinar registration form"}
    post_status("consent@example.com", portal.marketing, "SUBSCRIBED", **basis)
    post_status("consent@example.com", one_to_one, "UNSUBSCRIBED")
    post_status("gone@example.com", portal.marketing, "UNSUBSCRIBED")
    post_status("all@example.com", portal.marketing, "SUBSCRIBED")
    opt_out("all@example.com")
    post_status(
        "brand@example.com",
        trail,
        "SUBSCRIBED",
        legalBasis="LEGITIMATE_INTEREST_CLIENT",
        legalBasisExplanation="Customer",
    )
    post_status("brand@example.com", portal.marketing, "SUBSCRIBED")
    opt_out("brand@example.com", businessUnitId=str(brand))
    post_status("back@example.com", portal.marketing, "SUBSCRIBED")
    post_status("back@example.com", one_to_one, "SUBSCRIBED")
    opt_out("back@example.com")
    post_status("back@example.com", portal.marketing, "SUBSCRIBED", **basis)  # lifts the opt-out
    return ["consent@example.com", "gone@example.com", "all@example.com", "brand@example.com", "back@example.com"]


def seen(api: httpx.Client, email: str, brand: int) -> dict[str, Any]:
    """Everything v4 shows about the address, keyed by names (ids differ between portals)."""
    statuses = {**v4_statuses(api, email), **v4_statuses(api, email, brand)}
    # A subscription never set reads NOT_SPECIFIED as of its definition's creation: that time is the portal's own.
    shown = {
        name: state(s) if s["status"] != "NOT_SPECIFIED" else {"status": "NOT_SPECIFIED"}
        for name, s in statuses.items()
    }
    return {"statuses": shown, "optOuts": opt_outs(api, email, brand)}


def test_an_export_imports_into_another_portal_as_the_same_state(
    server: Server, portal: PortalFixture, tmp_path: Path
) -> None:
    api = portal.client()
    brand, trail = make_brand(api)
    addresses = build_state(api, portal, brand, trail)
    exported = tmp_path / "portal-a.csv"
    done = run_cli(server.store.url, "export", "--portal", str(portal.id), "-o", str(exported), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert exported.read_text(encoding="utf-8").splitlines()[0] == HEADER
    rows = read_csv(exported)
    assert {r["email"] for r in rows} == set(addresses)

    other = make_portal(server)
    with other.client() as theirs:
        assert make_brand(theirs)[0] == brand  # brands are numbered per portal
        run = imported(other, exported)
        assert run.counts == counts(rows=len(rows), applied=len(rows))
        for email in addresses:
            assert seen(theirs, email, brand) == seen(api, email, brand), email
            exported_changes = Counter(
                (r["subscription_name"] or r["scope"], r["status"], r["source"], r["timestamp"])
                for r in rows
                if r["email"] == email
            )
            imported_history = history(theirs, email)
            assert Counter(change(e)[:4] for e in imported_history) == exported_changes, email
            assert {change(e)[4] for e in imported_history} == {run.job_id}
    brand_record = seen(api, "brand@example.com", brand)
    assert brand_record["statuses"]["Trail news"]["status"] == "UNSUBSCRIBED"
    assert brand_record["statuses"]["Marketing Information"]["status"] == "SUBSCRIBED"
    back = seen(api, "back@example.com", brand)
    assert [o["status"] for o in back["optOuts"]] == ["SUBSCRIBED"]
    assert back["statuses"]["Marketing Information"]["legalBasisExplanation"] == "Webinar registration form"
