"""The dashboard in a real browser against the real api, stores, dispatcher and worker."""

from __future__ import annotations

import re
from typing import Any

from taskforge.worker.registry import Fail, JobContext, Registry, load
from tests.ui.conftest import System, running_system, screenshot

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture fails first, saying how to install it
    expect = None  # type: ignore[assignment]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def terminal(job: dict[str, Any]) -> bool:
    return job["status"] in {"completed", "dead", "cancelled"}


async def test_queues_page_shows_default_queue_with_job_states(page, system: System) -> None:
    finished = [await system.submit("ping", {"message": f"m{i}"}) for i in range(3)]
    died = await system.submit("dead", {"message": "the ui test kills this one"})
    await system.wait([job["id"] for job in [*finished, died]], terminal)

    await page.goto(f"{system.url}/ui")  # redirected to /ui/
    row = page.locator('tr[data-queue="default"]')
    await expect(row).to_be_visible()
    await expect(row.locator('td[data-state="completed"]')).to_have_text("3")
    await expect(row.locator('td[data-state="dead"]')).to_have_text("1")
    await expect(row.get_by_role("button", name="Pause queue default")).to_be_visible()
    await expect(row.locator("svg.spark")).to_be_visible()
    await screenshot(page, "queues")

    # Live updates keep the keyboard where it was: focus survives a refresh of the table.
    toggle = row.get_by_role("button", name="Pause queue default")
    await toggle.focus()
    updated = page.locator("#queues-updated")
    before = await updated.text_content()
    await expect(updated).not_to_have_text(before or "")
    await expect(row.get_by_role("button", name="Pause queue default")).to_be_focused()

    await row.get_by_role("button", name="Pause queue default").click()
    await expect(page.locator("#notice")).to_contain_text("Queue default paused")
    await expect(row.get_by_role("button", name="Resume queue default")).to_be_visible()
    await expect(row).to_contain_text("paused")
    await row.get_by_role("button", name="Resume queue default").click()
    await expect(row.get_by_role("button", name="Pause queue default")).to_be_visible()


async def test_submitted_job_is_listed_and_its_page_shows_the_timeline(
    page, system: System
) -> None:
    job = await system.submit(
        "ping", {"message": "hello from the ui test"}, headers={"traceparent": TRACEPARENT}
    )
    await system.wait([job["id"]], terminal)

    await page.goto(f"{system.url}/ui/#/jobs")
    await page.get_by_label("State").select_option("completed")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page).to_have_url(re.compile(r"#/jobs\?status=completed$"))
    row = page.locator(f'tr[data-job="{job["id"]}"]')
    await expect(row).to_contain_text("completed")
    await screenshot(page, "jobs")

    await row.get_by_role("link").click()
    timeline = page.locator("#timeline li")
    await expect(timeline.last).to_contain_text("completed")
    assert await timeline.count() >= 4  # created, queued, running, completed
    await expect(page.locator("pre.json").first).to_contain_text("hello from the ui test")
    trace = page.locator("#trace-link")
    await expect(trace).to_have_attribute(
        "href", "http://localhost:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
    )
    await expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()
    await screenshot(page, "job")

    await page.get_by_role("button", name="Retry job").click()
    await expect(page.locator("#notice")).to_contain_text("run again")
    # The page follows the job while it runs again: a second completion joins the timeline.
    await expect(page.locator('#timeline li[data-to="completed"]')).to_have_count(2)

    # Cursor paging: 25 more jobs, 20 per page.
    async with system.http.post(
        "/v1/jobs/batch", json={"jobs": [{"type": "noop", "payload": {}}] * 25}
    ) as response:
        assert response.status == 202, await response.text()
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_label("Per page").select_option("20")
    await page.get_by_role("button", name="Apply filters").click()
    rows = page.locator("tr[data-job]")
    await expect(rows).to_have_count(20)
    await page.get_by_role("button", name="Next page →").click()
    await expect(rows).to_have_count(6)
    await expect(page.get_by_role("button", name="Next page →")).to_be_disabled()
    await expect(page.locator(f'tr[data-job="{job["id"]}"]')).to_be_visible()  # the oldest
    await page.get_by_role("button", name="← Previous page").click()
    await expect(rows).to_have_count(20)


async def test_a_waiting_job_is_cancelled_from_its_page(page, system: System) -> None:
    job = await system.submit("ping", delay_seconds=3600)
    await page.goto(f"{system.url}/ui/#/jobs/{job['id']}")
    await expect(page.locator(".job-head .badge")).to_have_text("pending")
    await expect(page.get_by_role("button", name="Retry job")).to_be_disabled()
    await page.get_by_role("button", name="Cancel job").click()
    await expect(page.locator("#notice")).to_contain_text("Job cancelled")
    await expect(page.locator(".job-head .badge")).to_have_text("cancelled")
    await expect(page.locator("#timeline li").last).to_contain_text("cancelled")
    assert (await system.job(job["id"]))["status"] == "cancelled"


async def test_dead_letters_are_replayed_from_the_page(page, stores, pool, redis_client) -> None:
    broken = {"on": True}
    registry = load(())
    flaky = Registry()

    @flaky.job("ui.flaky")
    async def run(ctx: JobContext, payload: dict[str, Any]) -> Any:
        if broken["on"]:
            raise Fail("downstream said no (the ui test's broken dependency)")
        return {"ok": True}

    registry.include(flaky)
    async with running_system(stores, pool, redis_client, registry=registry) as system:
        jobs = [await system.submit("ui.flaky", {"n": i}) for i in range(3)]
        ids = [job["id"] for job in jobs]
        await system.wait(ids, lambda job: job["status"] == "dead")
        broken["on"] = False  # the dependency is fixed: replays will now succeed

        await page.goto(f"{system.url}/ui/#/dlq")
        rows = page.locator("tr[data-job]")
        await expect(rows).to_have_count(3)
        await expect(rows.first).to_contain_text("downstream said no")
        await screenshot(page, "dlq")

        first = ids[-1]  # newest first: the top row
        await page.locator(f'tr[data-job="{first}"]').get_by_role("button").click()
        await expect(page.locator("#notice")).to_contain_text("replayed")
        await expect(rows).to_have_count(2)
        await system.wait([first], lambda job: job["status"] == "completed")

        await page.get_by_label("Type").fill("ui.flaky")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page).to_have_url(re.compile(r"#/dlq\?type=ui.flaky$"))
        await page.get_by_role("button", name="Replay all matching…").click()
        confirm = page.locator("#replay-confirm")
        await expect(confirm).to_contain_text("2 dead jobs matching type ui.flaky")
        await screenshot(page, "dlq-confirm")
        await confirm.get_by_role("button", name="Replay 2 jobs").click()
        await expect(page.locator("#notice")).to_contain_text("Replayed 2 jobs")
        await expect(page.get_by_text("No dead job matches these filters.")).to_be_visible()
        await system.wait(ids, lambda job: job["status"] == "completed")


async def test_token_prompt_appears_with_auth_on_and_the_token_works(
    page, stores, pool, redis_client
) -> None:
    async with running_system(stores, pool, redis_client, token="ui-test-token") as system:
        job = await system.submit("ping")
        await system.wait([job["id"]], terminal)

        await page.goto(f"{system.url}/ui/")
        prompt = page.locator("#token-prompt")
        await expect(prompt).to_be_visible()
        await expect(page.get_by_label("API token", exact=True)).to_be_focused()
        await screenshot(page, "token-prompt")

        await page.get_by_label("API token", exact=True).fill("not-the-token")
        await page.keyboard.press("Enter")
        await expect(prompt).to_contain_text("refused")

        await page.get_by_label("API token", exact=True).fill("ui-test-token")
        await page.get_by_role("button", name="Use token").click()
        await expect(prompt).to_be_hidden()
        row = page.locator('tr[data-queue="default"]')
        await expect(row.locator('td[data-state="completed"]')).to_have_text("1")

        await page.reload()  # the token is kept for the tab's session
        await expect(row).to_be_visible()
        await expect(prompt).to_be_hidden()

        await page.get_by_role("button", name="Forget token").click()
        await expect(prompt).to_be_visible()
