"""The dashboard: ``/api/dashboard`` against hand-computed figures on SQLite and
PostgreSQL, and the page in headless Debian Chromium.

The store is filled through the store activities the workflow uses (decisions,
reviews, audit samples), with the times each row describes chosen by the test.
The page's screenshot goes to the test's temporary directory, or to
docs/dashboard.png with HITL_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import math
import os
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from hitl.api import create_app
from hitl.api.routes_dashboard import Bucket, DashboardQuery, bucket_range
from hitl.api.server import serving
from hitl.audits import record_audit_verdict
from hitl.cascade import JudgeResult, Routing
from hitl.client import HitlClient
from hitl.enums import DecisionStatus, ErrorCategory, LayerStatus, RiskLevel, Verdict, Zone
from hitl.payloads import RecordAuditInput, RecordDecisionInput, RecordReviewInput
from hitl.review import ReviewRecord
from hitl.state import DecisionState
from hitl.store import AuditRow, session_scope
from tests.conftest import register_reviewers
from tests.factories import make_request

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-lcd-text"]


def record(engine: Engine, decision_id: str, task_type: str, zone: Zone, at: datetime, *,
           status: DecisionStatus = DecisionStatus.EXECUTED, confidence: float = 0.9,
           judge: LayerStatus = LayerStatus.PASSED) -> None:
    """A finished decision's record, as the workflow's last activity writes it."""
    request = make_request(decision_id=decision_id, task_type=task_type, confidence=confidence)
    gate = zone.needs_review
    state = DecisionState(
        decision_id=decision_id, task_type=task_type, confidence=confidence, reversible=True,
        status=status, zone=zone, risk=RiskLevel.MEDIUM, policy_version="default-1+test",
        judge=JudgeResult(status=judge), routing=Routing(zone=zone, reasons=["test"]),
        submitted_at=at, escalated_at=at + timedelta(seconds=1) if gate else None,
        finished_at=at + timedelta(minutes=5))
    ActivityEnvironment().run(StoreActivities(engine=engine).record_decision,
                              RecordDecisionInput(request=request, state=state))


def review(engine: Engine, decision_id: str, task_type: str, reviewer: str, verdict: Verdict,
           at: datetime, latency: float, **fields: Any) -> None:
    ActivityEnvironment().run(StoreActivities(engine=engine).record_review, RecordReviewInput(
        decision_id=decision_id, task_type=task_type, confidence=0.6, zone="queue",
        risk="medium", review=ReviewRecord(
            request_id=f"{reviewer}-{decision_id}", reviewer=reviewer, verdict=verdict,
            received_at=at, latency_seconds=latency, **fields)))


def audit(engine: Engine, decision_id: str, task_type: str, verdict: Verdict | None, *,
          category: ErrorCategory | None = None) -> None:
    """A sampled AUTO_AUDIT decision (created now, as the activity writes it), then a verdict."""
    ActivityEnvironment().run(StoreActivities(engine=engine).record_audit, RecordAuditInput(
        decision_id=decision_id, task_type=task_type, risk=RiskLevel.HIGH, confidence=0.97,
        sampled=True, sample_rate=0.2))
    if verdict is not None:
        with session_scope(engine) as session:
            record_audit_verdict(session=session, decision_id=decision_id, reviewer="carol",
                                 verdict=verdict, error_category=category)


def fill_two_days(engine: Engine, now: datetime) -> None:
    """Yesterday: 5 auto and 1 queued refund, approved unchanged by alice after 60 s.
    Today: 1 auto refund, 1 escalated refund rejected by bob after 180 s with an
    answer, and 2 audited moderation decisions (one rejected). The judge ran on all 10."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(hours=14)  # 10:00 yesterday
    during_today = today + (now - today) / 2
    for i in range(5):
        record(engine, f"y-auto-{i}", "refund_request", Zone.AUTO, yesterday + timedelta(minutes=i))
    record(engine, "y-queue", "refund_request", Zone.QUEUE, yesterday)
    review(engine, "y-queue", "refund_request", "alice", Verdict.APPROVE,
           yesterday + timedelta(seconds=61), 60.0)
    record(engine, "t-auto", "refund_request", Zone.AUTO, during_today)
    record(engine, "t-escalate", "refund_request", Zone.ESCALATE, during_today,
           status=DecisionStatus.REJECTED)
    review(engine, "t-escalate", "refund_request", "bob", Verdict.REJECT,
           during_today + timedelta(seconds=181), 180.0, correct_answer="Refund $40",
           error_category=ErrorCategory.WRONG_AMOUNT)
    for i, verdict in enumerate((Verdict.REJECT, Verdict.APPROVE)):
        did = f"t-audit-{i}"
        record(engine, did, "content_moderation", Zone.AUTO_AUDIT, during_today)
        audit(engine, did, "content_moderation", verdict,
              category=ErrorCategory.POLICY_VIOLATION if verdict is Verdict.REJECT else None)


def app_for(client: Client, engine: Engine) -> httpx.AsyncClient:
    app = create_app(hitl=HitlClient(client), engine=engine)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hitl.test")


async def test_figures_match_the_hand_computed_ones(client: Client, engine: Engine) -> None:
    tokens = register_reviewers(engine, ("alice", "bob", "carol"))
    now = datetime.now(UTC)
    fill_two_days(engine, now)
    auth = {"Authorization": f"Bearer {tokens['carol']}"}
    async with app_for(client, engine) as http:
        response = await http.get("/api/dashboard", params={"days": 2, "bucket": "day"},
                                  headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        moderation = (await http.get("/api/dashboard", headers=auth, params={
            "days": 2, "bucket": "day", "task_type": "content_moderation"})).json()

    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert body["since"] == (midnight - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert body["task_types"] == ["content_moderation", "refund_request"]
    m = body["headline"]
    assert (m["scope"], m["decisions"]) == ("all", 10)
    assert (m["escalation"]["count"], m["escalation"]["total"], m["escalation"]["value"]) == (
        2, 10, 0.2)
    assert m["auto_resolve"]["value"] == 0.8
    assert (m["model_agreement"]["count"], m["model_agreement"]["total"]) == (1, 2)
    assert (m["latency"]["p50"], m["latency"]["n"]) == (120.0, 2)
    assert m["latency"]["p95"] == pytest.approx(60 + 0.95 * 120)
    escape = m["error_escape"]
    assert (escape["count"], escape["total"], escape["value"]) == (1, 2, 0.5)
    if escape["method"] == "clopper-pearson":  # exact for k = 1, n = 2: 1 - sqrt(.975), sqrt(.975)
        assert escape["lower"] == pytest.approx(1 - math.sqrt(0.975), rel=1e-6)
        assert escape["upper"] == pytest.approx(math.sqrt(0.975), rel=1e-6)
    assert m["reviewers"]["kappa"]["value"] is None
    assert "0 reviewer pairs" in m["reviewers"]["kappa"]["reason"]
    assert m["feedback"]["structured"] == {"count": 1, "total": 1, "value": 1.0}
    cost = m["cost"]  # 10 judge calls at $0.005 and 2 reviews at $1
    assert (cost["judge_calls"], cost["human_reviews"]) == (10, 2)
    assert cost["total"] == pytest.approx(2.05) and cost["per_decision"] == pytest.approx(0.205)
    assert m["backlog"] == {"arrivals": 2, "reviewed": 2, "waiting": 0, "unreviewed": 0}

    yesterday, today = body["series"]
    assert (yesterday["decisions"], yesterday["escalation"]["count"], yesterday["reviews"]) == (
        6, 1, 1)
    assert yesterday["latency"]["p50"] == 60.0 and yesterday["model_agreement"]["value"] == 1.0
    assert yesterday["error_escape"]["total"] == 0 and yesterday["error_escape"]["value"] is None
    assert yesterday["cost_per_decision"] == pytest.approx((6 * 0.005 + 1) / 6)
    assert (today["decisions"], today["escalation"]["value"], today["arrivals"]) == (4, 0.25, 1)
    assert today["model_agreement"]["value"] == 0.0 and today["latency"]["p95"] == 180.0
    assert today["error_escape"]["count"] == 1 and today["cost_per_decision"] == pytest.approx(
        (4 * 0.005 + 1) / 4)

    # One audited error in two is over the 2% target, but the interval reaches under it.
    assert [(a["code"], a["severity"], a["scope"]) for a in body["alerts"]] == [
        ("error_escape_high", "warning", "content_moderation"),
        ("error_escape_high", "warning", "all")]
    assert "1/2" in body["alerts"][0]["message"] and "recalibrate" in body["alerts"][0]["action"]

    h = moderation["headline"]
    assert (h["scope"], h["decisions"], h["escalation"]["value"]) == ("content_moderation", 2, 0.0)
    assert h["cost"]["human_reviews"] == 0 and moderation["task_types"] == body["task_types"]
    assert [a["scope"] for a in moderation["alerts"]] == ["content_moderation"]
    assert [p["decisions"] for p in moderation["series"]] == [0, 2]


async def test_needs_a_reviewer_and_names_bad_parameters(client: Client,
                                                         sqlite_engine: Engine) -> None:
    tokens = register_reviewers(sqlite_engine, ("dana",))
    auth = {"Authorization": f"Bearer {tokens['dana']}"}
    async with app_for(client, sqlite_engine) as http:
        assert (await http.get("/api/dashboard")).status_code == 401
        assert (await http.get("/api/dashboard",
                               headers={"Authorization": "Bearer nope"})).status_code == 401
        empty = await http.get("/api/dashboard", params={"days": 1, "bucket": "hour"},
                               headers=auth)
        too_many = await http.get("/api/dashboard", params={"days": 90, "bucket": "hour"},
                                  headers=auth)
        bad_days = await http.get("/api/dashboard", params={"days": 0}, headers=auth)
        bad_bucket = await http.get("/api/dashboard", params={"bucket": "month"}, headers=auth)
        page = await http.get("/dashboard")
        unknown = (await http.get("/api/dashboard", params={"task_type": "nothing_here"},
                                  headers=auth)).json()
    assert empty.status_code == 200
    data = empty.json()
    assert len(data["series"]) == 24 and data["headline"]["decisions"] == 0
    assert data["headline"]["escalation"]["value"] is None and data["alerts"] == []
    assert too_many.status_code == 422 and "2160 buckets" in too_many.text
    assert "bucket" in too_many.json()["detail"][0]["msg"]
    assert bad_days.status_code == 422 and bad_days.json()["detail"][0]["loc"][-1] == "days"
    assert bad_bucket.status_code == 422 and bad_bucket.json()["detail"][0]["loc"][-1] == "bucket"
    assert page.status_code == 200 and "/static/dashboard.js" in page.text
    assert (unknown["headline"]["scope"], unknown["headline"]["decisions"]) == ("nothing_here", 0)
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_ranges_are_whole_buckets_ending_on_a_boundary() -> None:
    now = datetime(2026, 3, 5, 10, 20, tzinfo=UTC)
    assert bucket_range(DashboardQuery(days=1.5), now) == (
        datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC))
    assert bucket_range(DashboardQuery(days=1, bucket=Bucket.HOUR), now) == (
        datetime(2026, 3, 4, 11, tzinfo=UTC), datetime(2026, 3, 5, 11, tzinfo=UTC))
    exact = DashboardQuery(days=14, bucket=Bucket.WEEK, until=datetime(2026, 3, 2))  # naive: UTC
    assert bucket_range(exact, now) == (datetime(2026, 2, 16, tzinfo=UTC),
                                        datetime(2026, 3, 2, tzinfo=UTC))


# ---------------------------------------------------------------- the page

def fill_four_weeks(engine: Engine, now: datetime) -> None:
    """The 28 days before today, three task types: escalation falling slowly on refunds,
    reviewers who disagree with the model, audited moderation with one escape."""
    rng = random.Random(11)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=28)
    verdicts = [Verdict.APPROVE, Verdict.APPROVE, Verdict.APPROVE, Verdict.REJECT]
    n = 0
    for day in range(28):
        for i in range(rng.randint(14, 22)):
            n += 1
            at = start + timedelta(days=day, hours=8, minutes=17 * i)
            kind = rng.random()
            did = f"seed-{n:04d}"
            if kind < 0.45:
                record(engine, did, "ticket_classification", Zone.AUTO, at)
            elif kind < 0.75:
                zone = Zone.ESCALATE if rng.random() < 0.3 else Zone.QUEUE
                escalate = rng.random() < 0.55 - day * 0.01
                if not escalate:
                    record(engine, did, "refund_request", Zone.AUTO, at)
                    continue
                verdict = rng.choice(verdicts)
                record(engine, did, "refund_request", zone, at,
                       status=DecisionStatus.EXECUTED if verdict is Verdict.APPROVE
                       else DecisionStatus.REJECTED)
                latency = rng.uniform(40, 420 if zone is Zone.QUEUE else 200)
                review(engine, did, "refund_request", rng.choice(["alice", "bob"]), verdict,
                       at + timedelta(seconds=latency + 1), latency,
                       edited=verdict is Verdict.APPROVE and rng.random() < 0.15,
                       correct_answer="Partial refund" if verdict is Verdict.REJECT else None,
                       error_category=ErrorCategory.WRONG_AMOUNT
                       if verdict is Verdict.REJECT else None)
            else:
                record(engine, did, "content_moderation", Zone.AUTO_AUDIT, at)
                if rng.random() < 0.5:
                    sampled_verdict = Verdict.REJECT if n % 9 == 0 else Verdict.APPROVE
                    with session_scope(engine) as session:  # backdated: a past audit
                        session.add(AuditRow(
                            decision_id=did, task_type="content_moderation", risk="high",
                            confidence=0.97, sampled=True, sample_rate=0.5,
                            verdict=sampled_verdict.value, reviewer="carol",
                            error_category="policy_violation"
                            if sampled_verdict is Verdict.REJECT else None,
                            created_at=at, reviewed_at=at + timedelta(hours=2)))
                        session.commit()


@pytest.mark.timeout(90)
@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="no /usr/bin/chromium (apt-get install -y chromium)")
async def test_dashboard_in_chromium(client: Client, sqlite_engine: Engine,
                                     tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    fill_four_weeks(sqlite_engine, datetime.now(UTC))
    tokens = register_reviewers(sqlite_engine, ("dana",))
    app = create_app(hitl=HitlClient(client), engine=sqlite_engine)
    async with serving(app) as url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)  # sign in on the review page, then follow its link
            await page.fill("#token", tokens["dana"])
            await page.press("#token", "Enter")
            await expect(page.locator("#who")).to_contain_text("dana")
            await page.click("a.nav[href='/dashboard']")
            await page.wait_for_url(f"{url}/dashboard")
            await expect(page.locator("#who")).to_have_text("dana")
            await page.select_option("#range", "7:day")
            tiles = page.locator("#tiles .tile")
            # The first answer may import scipy (exact intervals): seconds on a cold disk.
            await expect(tiles).to_have_count(9, timeout=30_000)
            escalation = page.locator(".tile[data-metric='Escalation rate'] .tile-value")
            await expect(escalation).to_have_text(re.compile(r"^\d+\.\d%$"))
            await expect(page.locator(".tile[data-metric='Error escape rate'] .tile-note")
                         ).to_contain_text("95% CI")
            charts = page.locator("#charts .chart")
            await expect(charts).to_have_count(6)
            rates = page.locator("[data-chart='Escalation and auto-resolve rate'] svg")
            # Data on the 28 days before today: 6 of the 7 buckets, two series.
            await expect(rates.locator("circle.point")).to_have_count(12)
            await expect(rates.locator("path.line")).to_have_count(2)

            await rates.focus()  # the keyboard reads the last bucket, then the one before
            readout = page.locator("[data-chart='Escalation and auto-resolve rate'] "
                                   ".chart-readout")
            await expect(readout).to_contain_text("escalation")
            await page.keyboard.press("ArrowLeft")
            await expect(rates.locator("circle.point.active")).to_have_count(2)

            await page.keyboard.press("3")  # 30 days, daily
            await expect(rates.locator("circle.point")).to_have_count(56)  # 28 days with data
            await expect(page.locator("#alerts > li.alert").first).to_be_visible()
            await page.select_option("#task", "content_moderation")
            await expect(page.locator("#span")).to_contain_text("decisions")
            moderation = page.locator(".tile[data-metric='Escalation rate'] .tile-value")
            await expect(moderation).to_have_text("0.0%")
            await page.select_option("#task", label="all task types")
            await expect(moderation).not_to_have_text("0.0%")
            await expect(rates.locator("circle.point")).to_have_count(56)
            await page.wait_for_timeout(200)
            shot = SCREENSHOT if os.environ.get("HITL_UPDATE_SCREENSHOT") else (
                tmp_path / "dashboard.png")
            # The top of the page (tiles, two rows of trends, the first alerts) keeps the PNG small.
            await page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": 1100,
                                                        "height": 630})
            assert errors == []
        finally:
            await browser.close()
    assert shot.stat().st_size > 10_000
