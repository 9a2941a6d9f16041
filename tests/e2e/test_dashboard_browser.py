"""The dashboard in a real browser (Playwright driving Debian's chromium) against a real gateway.

An operator signs in, adds providers, priced models and a workspace, creates a key (its secret shown
once) that the openai SDK then uses; changes a fallback chain and sees `x-model-used` follow it; reads
usage grouped by key, model, member and day, with a chart and a CSV export; follows a batch's
progress and its usage; revokes the key and the
SDK is refused within a second. Each step leaves a screenshot in the test's tmp dir (artifacts/).

No skip: without chromium the test fails (`make test` installs it).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import ADMIN_TOKEN, SIM_KEY, Admin, eventually, new_tenant

CHROMIUM = Path("/usr/bin/chromium")
HELLO = [{"role": "user", "content": "Hello from the dashboard test"}]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} missing: `make test` installs Debian's chromium (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Steps:
    """The page plus a numbered screenshot per step."""

    def __init__(self, page: Page, directory: Path) -> None:
        self.page = page
        self.directory = directory
        self.count = 0
        directory.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.directory / f"{self.count:02d}-{name}.png"), full_page=True)

    def tab(self, name: str) -> None:
        self.page.click(f"#tabs a[href='#{name}']")
        expect(self.page.locator(f"section#{name}")).to_be_visible()


def _fill(page: Page, form: str, **fields: str) -> None:
    for name, value in fields.items():
        field = page.locator(f"{form} [name={name}]")
        if field.evaluate("node => node.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.locator(f"{form} button:not([type=button])").click()


def _usage_rows(steps: Steps, group_by: str, workspace: str, wanted: str) -> list[str]:
    """Show usage grouped by ``group_by`` until a row label contains ``wanted`` (records arrive async)."""
    page = steps.page
    page.select_option("#usage-form [name=workspace]", workspace)
    page.select_option("#usage-form [name=group_by]", group_by)

    def shown() -> list[str] | None:
        page.click("#usage-form button:not([type=button])")
        page.wait_for_timeout(100)
        rows = page.locator("#usage tbody tr td:first-child").all_inner_texts()
        return rows if any(wanted in row for row in rows) else None

    rows = eventually(shown, timeout=15.0, interval=0.2)
    bars = page.locator("#usage-chart rect.chart-bar")
    assert bars.count() == len(rows)  # one bar per group
    steps.shot(f"usage-by-{group_by}")
    return rows


def test_operator_runs_the_gateway_from_the_dashboard(
    browser: Browser,
    gateway: Stack,
    openai_sim: SimulatorProcess,
    claude_sim: SimulatorProcess,
    tmp_path: Path,
):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before revoking
    steps = Steps(page, tmp_path / "artifacts")
    try:
        # Sign in with the admin token.
        page.goto(gateway.admin_url + "/dashboard")
        expect(page.locator("#login")).to_be_visible()
        steps.shot("sign-in")
        _fill(page, "#login-form", token=ADMIN_TOKEN)
        expect(page.locator("#tabs")).to_be_visible()

        # Providers, then models with prices.
        steps.tab("providers")
        _fill(
            page,
            "#provider-form",
            name="ui-openai",
            kind="openai",
            base_url=openai_sim.base_url,
            api_key=SIM_KEY,
        )
        expect(page.locator("#providers tbody")).to_contain_text("ui-openai")
        _fill(
            page,
            "#provider-form",
            name="ui-claude",
            kind="anthropic",
            base_url=claude_sim.base_url,
            api_key=SIM_KEY,
        )
        expect(page.locator("#providers tbody")).to_contain_text("ui-claude")
        assert SIM_KEY not in page.content()  # a provider key is never shown back
        steps.shot("providers")
        steps.tab("models")
        prices = {"input_per_mtok": "0.15", "output_per_mtok": "0.60"}
        _fill(
            page, "#model-form", slug="ui-gpt", provider="ui-openai", upstream_model="gpt-4o-mini", **prices
        )
        expect(page.locator("#models tbody")).to_contain_text("ui-gpt")
        _fill(
            page,
            "#model-form",
            slug="ui-sonnet",
            provider="ui-claude",
            upstream_model="claude-sonnet-4-5",
            **prices,
        )
        expect(page.locator("#models tbody")).to_contain_text("ui-sonnet")
        steps.shot("models")

        # A workspace, a member and a key: the secret is shown once.
        steps.tab("workspaces")
        _fill(page, "#workspace-form", name="ui-ws")
        row = page.locator("#workspaces > table tbody tr", has_text="ui-ws")
        row.get_by_role("button", name="Members & keys").click()
        expect(page.locator("#workspace-detail")).to_be_visible()
        _fill(page, "#member-form", email="ops@ui-ws.example")
        expect(page.locator("#members tbody")).to_contain_text("ops@ui-ws.example")
        _fill(page, "#key-form", name="ui-key")
        expect(page.locator("#secret")).to_be_visible()
        key = page.locator("#secret input").input_value()
        assert key.startswith("inf_")
        steps.shot("key-created")
        row.get_by_role("button", name="Members & keys").click()
        expect(page.locator("#secret")).to_be_hidden()
        assert key not in page.content()  # shown once: only its prefix stays
        expect(page.locator("#keys tbody")).to_contain_text("active")

        # The openai SDK with that key.
        client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
        first = eventually(
            lambda: client.chat.completions.with_raw_response.create(model="ui-gpt", messages=HELLO),
            timeout=10,
        )
        assert first.headers["x-model-used"] == "ui-gpt"

        # A fallback chain set in the page: the failing primary now falls back to ui-sonnet.
        steps.tab("routes")
        _fill(page, "#route-form", slug="ui-gpt", fallbacks="ui-sonnet")
        expect(page.locator("#routes tbody")).to_contain_text("ui-sonnet")
        steps.shot("fallback-route")

        def served_by_fallback() -> bool:
            openai_sim.script([{"status": 503}])
            raw = client.chat.completions.with_raw_response.create(model="ui-gpt", messages=HELLO)
            return raw.headers["x-model-used"] == "ui-sonnet"

        try:
            eventually(served_by_fallback, timeout=10)
        finally:
            openai_sim.clear()
        for _ in range(2):
            assert (
                client.chat.completions.with_raw_response.create(model="ui-gpt", messages=HELLO).headers[
                    "x-model-used"
                ]
                == "ui-gpt"
            )

        # Usage grouped four ways, a chart, a CSV export.
        steps.tab("usage")
        assert len(_usage_rows(steps, "key", "ui-ws", "ui-key (inf_")) == 1  # named, not an id
        models = _usage_rows(steps, "model", "ui-ws", "ui-sonnet")
        assert set(models) == {"ui-gpt", "ui-sonnet"}
        assert _usage_rows(steps, "member", "ui-ws", "ops@ui-ws.example") == ["ops@ui-ws.example"]
        today = datetime.now(UTC).date().isoformat()
        assert today in _usage_rows(steps, "day", "ui-ws", today)
        _usage_rows(steps, "model", "ui-ws", "ui-gpt")  # the export is of the table shown
        with page.expect_download() as download:
            page.click("#usage-csv")
        exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert download.value.suggested_filename == "usage-by-model.csv"
        assert {r["model"] for r in exported} == {"ui-gpt", "ui-sonnet"}
        by_model = {r["model"]: r for r in exported}
        assert int(by_model["ui-gpt"]["requests"]) >= 3 and int(by_model["ui-sonnet"]["requests"]) >= 1
        assert all(r["credits"] and float(r["credits"]) > 0 for r in exported)

        # A batch run with the SDK: its progress in the Batches tab, its usage grouped by batch.
        line = {"custom_id": "ui-1", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "ui-gpt", "messages": HELLO}}  # fmt: skip
        lines = json.dumps(line).encode() + b"\n" + json.dumps({**line, "custom_id": "ui-2"}).encode()
        batch = client.batches.create(
            input_file_id=client.files.create(file=("b.jsonl", lines), purpose="batch").id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        eventually(lambda: client.batches.retrieve(batch.id).status == "completed", timeout=30, interval=0.2)
        steps.tab("batches")
        batch_row = page.locator("#batches tbody tr", has_text=batch.id)
        expect(batch_row).to_contain_text("completed")
        expect(batch_row).to_contain_text("2/2")
        expect(batch_row).to_contain_text("ui-ws")
        assert batch_row.locator("progress").get_attribute("value") == "2"
        steps.shot("batches")
        steps.tab("usage")
        assert batch.id in _usage_rows(steps, "batch", "ui-ws", batch.id)

        # Revoke in the page: the SDK is refused within a second.
        steps.tab("workspaces")
        row.get_by_role("button", name="Members & keys").click()
        page.locator("#keys tbody tr", has_text="ui-key").get_by_role("button", name="Revoke").click()
        expect(page.locator("#keys tbody")).to_contain_text("revoked")
        steps.shot("key-revoked")

        def refused() -> bool:
            try:
                client.models.list()
            except openai.AuthenticationError as err:
                return err.code == "invalid_api_key"
            return False

        eventually(refused, timeout=1.0, interval=0.01)
    finally:
        steps.shot("last")
        context.close()


def test_operator_sees_each_workspaces_files_and_their_usage(
    browser: Browser, gateway: Stack, admin: Admin, tmp_path: Path
):
    """Issue 14 item 7: the files a workspace uploaded (with the openai SDK, through Envoy and the
    files service) are listed in its detail, another workspace's are not, a deleted one is gone; the
    usage breakdown by endpoint shows the uploads' and deletes' bytes."""
    alice = new_tenant(admin, gateway, "ui-files-a")
    bob = new_tenant(admin, gateway, "ui-files-b")
    client = alice.client(gateway)
    report = client.files.create(file=("report.pdf", b"%PDF-1.4 " + b"r" * 1991), purpose="user_data")
    batch = client.files.create(file=("batch.jsonl", b"{}\n" * 100), purpose="batch")
    gone = client.files.create(file=("gone.txt", b"g" * 77), purpose="user_data")
    client.files.delete(gone.id)
    bob.client(gateway).files.create(file=("bob-secret.txt", b"bob's"), purpose="user_data")

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    steps = Steps(page, tmp_path / "artifacts")
    try:
        page.goto(gateway.admin_url + "/dashboard")
        _fill(page, "#login-form", token=ADMIN_TOKEN)
        steps.tab("workspaces")
        row = page.locator("#workspaces > table tbody tr", has_text="ui-files-a")
        row.get_by_role("button", name="Members & keys").click()
        files = page.locator("#files tbody tr")
        expect(files).to_have_count(2)
        steps.shot("workspace-files")
        shown = [r.locator("td").all_inner_texts() for r in files.all()]
        assert [r[:4] for r in shown] == [  # newest first
            ["batch.jsonl", batch.id, "batch", "300"],
            ["report.pdf", report.id, "user_data", "2,000"],
        ]
        # The uploader named by email, and no expiry set.
        assert all(r[4] == alice.member_email and r[6] == "kept until deleted" for r in shown)
        text = page.locator("#workspace-detail").inner_text()
        assert "bob-secret.txt" not in text and gone.id not in text

        steps.tab("usage")
        _usage_rows(steps, "endpoint", "ui-files-a", "/v1/files/{file_id}")
        cells = {
            r.locator("td").first.inner_text(): r.locator("td").all_inner_texts()
            for r in page.locator("#usage tbody tr").all()
        }
        # group, requests, input, cached, output, file bytes, credits
        assert (
            cells["/v1/files"][1] == "3" and cells["/v1/files"][5] == "2,377" and cells["/v1/files"][6] == "0"
        )
        assert cells["/v1/files/{file_id}"][1:2] + cells["/v1/files/{file_id}"][5:] == ["1", "77", "0"]
    finally:
        steps.shot("last")
        context.close()
