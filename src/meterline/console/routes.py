"""The console's pages and actions under /console (DESIGN §15).

Server-rendered HTML, no JavaScript: every page is a GET that reads, every
action is a POST form carrying the session's CSRF token. Pages answer with a
strict Content-Security-Policy (no scripts at all, styles from /console only),
`no-store` caching and no referrer, so share-link signatures never leak through
a Referer header. Data comes only through `console.queries`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from meterline.api.adapt import blocking
from meterline.api.context import AppContext
from meterline.api.errors import ApiError, status_of
from meterline.billing.document import Issued, Kind, Status
from meterline.billing.finance import percent
from meterline.billing.progressive import describe
from meterline.console import queries, share
from meterline.console.charts import Bar, bar_chart
from meterline.console.sessions import ABSOLUTE_US, COOKIE, LoginRefused, Session, Sessions, csrf_ok
from meterline.domain.canonical import dumps
from meterline.domain.errors import MeterlineError
from meterline.domain.timestamps import US_PER_HOUR, format_us, from_datetime, parse_rfc3339

log = logging.getLogger("meterline.console")

PREFIX = "/console"
PRE_COOKIE = "meterline_console_login"
EVENTS_PAGE = 50
QUARANTINE_PAGE = 50
AUDIT_ROWS = 200
MAX_FORM_BYTES = 1024 * 1024
SHARE_DAYS_DEFAULT = 14
SHARE_DAYS_MAX = 90

_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class Refused(Exception):
    """A page answer other than 200: rendered as a calm error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Console:
    ctx: AppContext
    sessions: Sessions
    secret: bytes
    env: Environment

    def now_us(self) -> int:
        return from_datetime(self.ctx.clock.now())


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("meterline.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["qty"] = _qty
    env.filters["percent"] = percent
    env.filters["when"] = _when
    env.filters["json"] = lambda v: dumps(v).decode()
    env.filters["pretty"] = lambda v: msgspec.json.format(msgspec.json.encode(v), indent=2).decode()
    env.filters["exact"] = _exact
    env.filters["readable_items"] = lambda d: [
        (k, v) for k, v in (d or {}).items() if not str(k).endswith("_us")
    ]
    env.filters["urlq"] = lambda v: quote(str(v), safe="")
    env.filters["progressive"] = describe  # interim and final invoices say what they are
    return env


def _money(value: Any, currency: str = "") -> str:
    if value in (None, ""):
        return "—"
    try:
        d = Decimal(str(value))
    except ArithmeticError:
        return f"{value} {currency}".strip()  # already text (e.g. "1,000"): show as given
    if not d.is_finite():
        return str(value)
    sign = "-" if d < 0 else ""
    whole, _, frac = f"{abs(d):f}".partition(".")
    text = f"{sign}{int(whole):,}" + (f".{frac}" if frac else "")
    return f"{text} {currency}".strip()


def _exact(value: Any) -> str:
    """An exact decimal, cut to 10 fraction digits for reading (the JSON keeps all)."""
    text = str(value)
    whole, _, frac = text.partition(".")
    return text if len(frac) <= 10 else f"{whole}.{frac[:10]}…"


def _qty(value: Any) -> str:
    if value in (None, ""):
        return "—"
    return _money(value)


def _when(value: Any) -> str:
    """RFC 3339 text or microseconds -> "2024-02-01 12:05 UTC"."""
    if value in (None, ""):
        return "—"
    text = format_us(int(value)) if isinstance(value, int) else str(value)
    date, _, time = text.partition("T")
    return f"{date} {time[:5]} UTC" if time else date


def _form_value(form: dict[str, str], name: str) -> str:
    return form.get(name, "")


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, "the form is too large")
    if not body:
        return {}  # no fields at all: refused by the CSRF check that follows
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refused(415, "this form must be sent as application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Refused(400, "the form is not UTF-8") from None
    return dict(pairs)


def _status_for(exc: MeterlineError) -> int:
    status = status_of(str(exc.code))
    return status if status < 500 or status == 503 else 400


def router(ctx: AppContext, sessions: Sessions, secret: bytes) -> APIRouter:
    console = Console(ctx, sessions, secret, _environment())
    api = APIRouter(prefix=PREFIX, include_in_schema=False)

    def render(
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        html = console.env.get_template(template).render(
            session=session,
            path=request.url.path,
            prefix=PREFIX,
            **values,
        )
        return HTMLResponse(html, status, headers=_HEADERS)

    def error_page(
        request: Request, session: Session | None, status: int, message: str
    ) -> HTMLResponse:
        return render(request, "error.html", session, status, status_code=status, message=message)

    Handler = Callable[[Request, Session], Awaitable[Response]]

    def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page for a logged-in operator; errors become an error page, never a 500."""

        async def wrapped(request: Request) -> Response:
            token = request.cookies.get(COOKIE)
            now = console.now_us()
            try:
                session = await run(lambda: console.sessions.get(token, now))
            except MeterlineError as exc:  # the store is not there (yet): no 500
                return error_page(request, None, _status_for(exc), exc.message)
            if session is None:
                if request.method != "GET":
                    return error_page(request, None, 403, "your session has ended; log in again")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(
                    f"{PREFIX}/login?{urlencode({'next': target})}", 303, headers=_HEADERS
                )
            try:
                return await handler(request, session)
            except Refused as exc:
                return error_page(request, session, exc.status, exc.message)
            except MeterlineError as exc:
                return error_page(request, session, _status_for(exc), exc.message)
            except ApiError as exc:
                return error_page(request, session, exc.status, exc.message)

        return wrapped

    async def checked_form(request: Request, session: Session) -> dict[str, str]:
        form = await _form(request)
        if not csrf_ok(session, form.get("csrf")):
            raise Refused(403, "this form is missing its security token (CSRF); reload the page")
        return form

    def run(work: Callable[[], Any]) -> Awaitable[Any]:
        return blocking(ctx, work)

    # --- static -----------------------------------------------------------------

    @api.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in {"console.css"}:
            return Response("not found", 404, media_type="text/plain")
        data = resources.files("meterline.console").joinpath("static", name).read_bytes()
        return Response(
            data,
            media_type="text/css",
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    # --- login / logout ---------------------------------------------------------

    @api.get("/login")
    async def login_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = render(
            request,
            "login.html",
            None,
            csrf=nonce,
            next=_safe_next(request.query_params.get("next")),
            error=None,
        )
        _set_cookie(request, response, PRE_COOKIE, nonce, 15 * 60)
        return response

    @api.post("/login")
    async def login(request: Request) -> Response:
        try:
            form = await _form(request)
        except Refused as exc:
            return error_page(request, None, exc.status, exc.message)
        pre = request.cookies.get(PRE_COOKIE, "")
        sent = form.get("csrf", "")
        if not pre or not sent or not secrets.compare_digest(pre.encode(), sent.encode()):
            return error_page(
                request,
                None,
                403,
                "this form is missing its security token (CSRF); reload the page",
            )
        now = console.now_us()
        try:
            token, session = await run(lambda: console.sessions.login(form.get("key", ""), now))
        except MeterlineError as exc:
            return error_page(request, None, _status_for(exc), exc.message)
        except LoginRefused:
            log.warning("console login refused (unknown key or not an admin key)")
            nonce = secrets.token_urlsafe(24)
            response = render(
                request,
                "login.html",
                None,
                403,
                csrf=nonce,
                next=_safe_next(form.get("next")),
                error="That key cannot open the console: only admin API keys can.",
            )
            _set_cookie(request, response, PRE_COOKIE, nonce, 15 * 60)
            return response
        await run(lambda: queries.record(ctx.handle, "console.login", {}, now, session.actor))
        redirect = RedirectResponse(_safe_next(form.get("next")), 303, headers=_HEADERS)
        _set_cookie(request, redirect, COOKIE, token, ABSOLUTE_US // 1_000_000)
        redirect.delete_cookie(PRE_COOKIE, path=PREFIX)
        return redirect

    async def logout(request: Request, session: Session) -> Response:
        await checked_form(request, session)
        token = request.cookies.get(COOKIE)
        await run(lambda: console.sessions.logout(token))
        now = console.now_us()
        await run(lambda: queries.record(ctx.handle, "console.logout", {}, now, session.actor))
        response = RedirectResponse(f"{PREFIX}/login", 303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    api.add_api_route("/logout", page(logout), methods=["POST"])

    # --- overview ---------------------------------------------------------------

    async def overview(request: Request, session: Session) -> Response:
        now = console.now_us()
        data = await run(lambda: queries.overview_data(ctx.handle, now))
        buckets = data["buckets"]
        charts = {
            name: bar_chart(
                [Bar(_when(b.start_us)[5:10], Decimal(getattr(b, name))) for b in buckets],
                title=f"{name} per day",
                unit="events",
                width=400,
                height=130,
                tone=tone,
                ticks=7,
            )
            for name, tone in (
                ("accepted", "accent"),
                ("duplicates", "muted"),
                ("rejected", "warn"),
            )
        }
        return render(request, "overview.html", session, data=data, charts=charts, now=now)

    api.add_api_route("", page(overview), methods=["GET"])
    api.add_api_route("/", page(overview), methods=["GET"])

    # --- customers --------------------------------------------------------------

    async def customers(request: Request, session: Session) -> Response:
        q = request.query_params.get("q", "")[:256]
        rows = await run(lambda: queries.find_customers(ctx.handle, q))
        return render(request, "customers.html", session, q=q, rows=rows[:500], total=len(rows))

    api.add_api_route("/customers", page(customers), methods=["GET"])

    async def customer(request: Request, session: Session) -> Response:
        cid = request.path_params["customer_id"]
        now = console.now_us()

        def work() -> dict[str, Any]:
            c = queries.customer(ctx.handle, cid)
            label = queries.open_period(c, now)
            lo, hi = now - 30 * 24 * US_PER_HOUR, now
            charts = []
            for meter in queries.meters_of(ctx.handle, c):
                usage = queries.usage_series(ctx.handle, cid, meter, lo, hi, now)
                bars = _window_bars(usage, daily=True)
                charts.append(
                    {
                        "meter": meter,
                        "aggregation": usage["aggregation"],
                        "total": usage["total"],
                        "chart": bar_chart(
                            bars, title=f"{meter} per day", width=1200, height=150, ticks=10
                        ),
                    }
                )
            try:
                bill: dict[str, Any] | None = queries.running_bill(ctx.handle, cid, label)
                bill_error = None
            except MeterlineError as exc:
                bill, bill_error = None, exc.message
            docs = queries.documents(ctx.handle, cid)
            return {
                "c": c,
                "label": label,
                "charts": charts,
                "bill": bill,
                "bill_error": bill_error,
                "docs": list(reversed(docs)),
                "balances": queries.balances(ctx.handle, cid),
                "since": lo,
            }

        data = await run(work)
        return render(request, "customer.html", session, **data)

    api.add_api_route("/customers/{customer_id}", page(customer), methods=["GET"])

    # --- invoices ---------------------------------------------------------------

    async def invoices(request: Request, session: Session) -> Response:
        qp = request.query_params
        filters = {k: qp.get(k, "").strip()[:256] for k in ("period", "status", "kind", "customer")}
        docs: list[Issued] = await run(
            lambda: queries.documents(ctx.handle, filters["customer"] or None)
        )
        periods = sorted({d.body.period.label for d in docs}, reverse=True)
        rows = [
            d
            for d in docs
            if (not filters["period"] or d.body.period.label == filters["period"])
            and (not filters["status"] or str(d.status) == filters["status"])
            and (not filters["kind"] or str(d.kind) == filters["kind"])
        ]
        rows.reverse()
        return render(
            request,
            "invoices.html",
            session,
            rows=rows[:1000],
            total=len(rows),
            filters=filters,
            periods=periods,
            statuses=[str(s) for s in Status if s is not Status.DRAFT],
            kinds=[str(k) for k in Kind],
        )

    api.add_api_route("/invoices", page(invoices), methods=["GET"])

    async def invoice(request: Request, session: Session) -> Response:
        number = request.path_params["number"]

        def work() -> dict[str, Any]:
            doc = queries.document(ctx.handle, number)
            notes = queries.chain(ctx.handle, doc)
            parent = queries.document(ctx.handle, doc.body.corrects) if doc.body.corrects else None
            return {"doc": doc, "d": doc.to_dict(), "notes": notes, "parent": parent}

        data = await run(work)
        return render(request, "invoice.html", session, share_link=None, **data)

    api.add_api_route("/invoices/{number}", page(invoice), methods=["GET"])

    async def line(request: Request, session: Session) -> Response:
        """Line -> its windows (a chart from the usage index): cheap on any store."""
        number = request.path_params["number"]
        n = _int(request.path_params["line"], 1, 1_000_000)
        now = console.now_us()

        def work() -> dict[str, Any]:
            doc = queries.document(ctx.handle, number).to_dict()
            chosen = queries.explain(ctx.handle, number, n, False, EVENTS_PAGE, 0)["line"]
            result: dict[str, Any] = {"d": doc, "line": chosen, "events": None, "chart": None}
            if not chosen.get("meter") or chosen.get("usage") is None:
                return result
            usage = queries.line_windows(ctx.handle, doc, chosen, now)
            result["windows"] = usage["windows"]
            result["chart"] = bar_chart(
                _window_bars(usage),
                title=f"{chosen['meter']} per window",
                width=1200,
                height=200,
                ticks=10,
            )
            return result

        data = await run(work)
        return render(request, "line.html", session, page_size=EVENTS_PAGE, **data)

    async def line_events(request: Request, session: Session) -> Response:
        """Windows -> the line's source events as known at the cutoff, one page at a time."""
        number = request.path_params["number"]
        n = _int(request.path_params["line"], 1, 1_000_000)
        offset = _int(request.query_params.get("offset", "0"), 0, 2**62)

        def work() -> dict[str, Any]:
            doc = queries.document(ctx.handle, number).to_dict()
            events = queries.explain(ctx.handle, number, n, True, EVENTS_PAGE, offset)
            return {"d": doc, "line": events["line"], "events": events, "chart": None}

        data = await run(work)
        return render(request, "line.html", session, page_size=EVENTS_PAGE, **data)

    async def event_proof(request: Request, session: Session) -> Response:
        """One source event's inclusion proof (DESIGN §2), with the session's access:
        the path from its leaf to the root the invoice records, and whether it checks."""
        number = request.path_params["number"]
        event_id = request.query_params.get("event_id", "")
        source = request.query_params.get("source") or None

        def work() -> dict[str, Any]:
            doc = queries.document(ctx.handle, number).to_dict()
            return {"d": doc, "p": queries.proof(ctx.handle, number, event_id, source)}

        data = await run(work)
        return render(request, "proof.html", session, **data)

    api.add_api_route("/invoices/{number}/proof", page(event_proof), methods=["GET"])
    api.add_api_route("/invoices/{number}/lines/{line}", page(line), methods=["GET"])
    api.add_api_route("/invoices/{number}/lines/{line}/events", page(line_events), methods=["GET"])

    async def rerate_preview(request: Request, session: Session) -> Response:
        number = request.path_params["number"]

        def work() -> dict[str, Any]:
            doc = queries.document(ctx.handle, number)
            return {"doc": doc, "note": queries.rerate_preview(ctx.handle, number)}

        data = await run(work)
        return render(request, "rerate.html", session, issued=None, **data)

    async def rerate_issue(request: Request, session: Session) -> Response:
        number = request.path_params["number"]
        form = await checked_form(request, session)
        if form.get("confirm") != "yes":
            raise Refused(400, "tick the confirmation box to issue the correction")
        reason = form.get("reason", "").strip()[:500] or None
        now = console.now_us()
        issued = await run(
            lambda: queries.rerate_issue(ctx.handle, number, reason, now, session.actor)
        )
        if issued:
            return RedirectResponse(
                f"{PREFIX}/invoices/{quote(issued[0].number)}?issued=1", 303, headers=_HEADERS
            )
        doc = await run(lambda: queries.document(ctx.handle, number))
        return render(request, "rerate.html", session, doc=doc, note=None, issued=[])

    api.add_api_route("/invoices/{number}/rerate", page(rerate_preview), methods=["GET"])
    api.add_api_route("/invoices/{number}/rerate", page(rerate_issue), methods=["POST"])

    async def share_create(request: Request, session: Session) -> Response:
        number = request.path_params["number"]
        form = await checked_form(request, session)
        days = _int(form.get("days", str(SHARE_DAYS_DEFAULT)) or "0", 1, SHARE_DAYS_MAX)
        now = console.now_us()
        doc = await run(lambda: queries.document(ctx.handle, number))
        expires = now + days * 24 * US_PER_HOUR
        sig = share.sign(console.secret, doc.number, expires)
        link = f"{PREFIX}/share/{quote(doc.number)}?{urlencode({'expires': expires, 'sig': sig})}"
        details = {"number": doc.number, "expires": format_us(expires)}
        await run(lambda: queries.record(ctx.handle, "console.share", details, now, session.actor))
        notes = await run(lambda: queries.chain(ctx.handle, doc))
        parent = None
        if doc.body.corrects:
            parent = await run(lambda: queries.document(ctx.handle, doc.body.corrects))
        return render(
            request,
            "invoice.html",
            session,
            doc=doc,
            d=doc.to_dict(),
            notes=notes,
            parent=parent,
            share_link={"url": str(request.base_url).rstrip("/") + link, "expires": expires},
        )

    api.add_api_route("/invoices/{number}/share", page(share_create), methods=["POST"])

    # --- quarantine -------------------------------------------------------------

    async def quarantine(request: Request, session: Session) -> Response:
        after = _int(request.query_params.get("after", "0"), 0, 2**62)

        def work() -> dict[str, Any]:
            return {
                "page": queries.quarantine_page(ctx.handle, after, QUARANTINE_PAGE),
                "replayed": queries.replays(ctx.handle),
            }

        data = await run(work)
        return render(request, "quarantine.html", session, after=after, **data)

    api.add_api_route("/quarantine", page(quarantine), methods=["GET"])

    def _entry_view(entry: dict[str, Any]) -> dict[str, Any]:
        raw: bytes = entry["raw"]
        try:
            text = raw.decode("utf-8")
            with contextlib.suppress(msgspec.DecodeError, ValueError):
                text = msgspec.json.format(text.encode(), indent=2).decode()
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
        return entry | {"text": text}

    async def quarantine_entry(request: Request, session: Session) -> Response:
        entry_id = _int(request.path_params["entry_id"], 1, 2**62)

        def work() -> dict[str, Any]:
            entry = queries.quarantine_entry(ctx.handle, entry_id)
            if entry is None:
                raise Refused(404, f"no quarantined entry {entry_id}")
            return {
                "entry": _entry_view(entry),
                "replay": queries.replays(ctx.handle).get(entry_id),
            }

        data = await run(work)
        return render(request, "quarantine_entry.html", session, result=None, **data)

    async def quarantine_replay(request: Request, session: Session) -> Response:
        entry_id = _int(request.path_params["entry_id"], 1, 2**62)
        form = await checked_form(request, session)
        raw = form.get("raw", "").strip().encode("utf-8")
        now = console.now_us()

        def work() -> dict[str, Any]:
            entry = queries.quarantine_entry(ctx.handle, entry_id)
            if entry is None:
                raise Refused(404, f"no quarantined entry {entry_id}")
            try:
                done = queries.replay(ctx.handle, entry_id, raw, now, session.actor)
                result: dict[str, Any] = {"report": done.report.to_dict(), "error": None}
            except ApiError as exc:
                result = {"report": None, "error": exc.message}
            view = _entry_view(entry) | {"text": raw.decode("utf-8")}
            return {
                "entry": view,
                "result": result,
                "replay": queries.replays(ctx.handle).get(entry_id),
            }

        data = await run(work)
        ok = data["result"]["report"] is not None and data["result"]["report"]["rejected"] == 0
        return render(request, "quarantine_entry.html", session, 200 if ok else 422, **data)

    api.add_api_route("/quarantine/{entry_id}", page(quarantine_entry), methods=["GET"])
    api.add_api_route("/quarantine/{entry_id}/replay", page(quarantine_replay), methods=["POST"])

    # --- price books and audit --------------------------------------------------

    async def price_books(request: Request, session: Session) -> Response:
        books = await run(lambda: queries.price_books(ctx.handle))
        return render(request, "price_books.html", session, books=books)

    api.add_api_route("/price-books", page(price_books), methods=["GET"])

    async def audit(request: Request, session: Session) -> Response:
        action = request.query_params.get("action", "").strip()[:64] or None
        rows = await run(lambda: queries.audit_rows(ctx.handle, AUDIT_ROWS, action))
        rows.reverse()
        return render(request, "audit.html", session, rows=rows, action=action or "")

    api.add_api_route("/audit", page(audit), methods=["GET"])

    # --- the share link (no session: the signature is the permission) -----------

    @api.get("/share/{number}")
    async def shared(request: Request, number: str) -> Response:
        expires = request.query_params.get("expires", "")
        sig = request.query_params.get("sig", "")
        if not share.valid(console.secret, number, expires, sig, console.now_us()):
            return error_page(
                request, None, 403, "This link is not valid: it has expired or was altered."
            )
        try:
            doc, notes = await run(
                lambda: (
                    queries.document(ctx.handle, number),
                    queries.chain(ctx.handle, queries.document(ctx.handle, number)),
                )
            )
        except MeterlineError as exc:
            return error_page(request, None, _status_for(exc), exc.message)
        return render(
            request,
            "shared.html",
            None,
            doc=doc,
            d=doc.to_dict(),
            notes=[n for n in notes if n.status != Status.VOID],
            expires=int(expires),
        )

    return api


def _window_bars(usage: dict[str, Any], daily: bool = False) -> list[Bar]:
    """One bar per window slot over the whole range, zero where nothing was recorded,
    so the x axis is time; values of several dimension groups in a slot add up."""
    windows = usage["windows"]
    lo, hi = parse_rfc3339(usage["from"]), parse_rfc3339(usage["to"])
    size = (
        parse_rfc3339(windows[0]["end"]) - parse_rfc3339(windows[0]["start"])
        if windows
        else hi - lo
    )
    values: dict[int, Decimal] = {}
    pending: set[int] = set()
    for w in windows:
        start = parse_rfc3339(w["start"])
        values[start] = values.get(start, Decimal(0)) + queries.decimal(w["value"])
        if not w["final"]:
            pending.add(start)
    return [
        Bar(
            _when(t)[5:16],
            values.get(t, Decimal(0)),
            "not final" if t in pending else "",
            t in pending,
        )
        for t in range(lo, hi, max(size, 1))
    ]


def _int(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise Refused(400, f"expected a whole number, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise Refused(400, f"{value} is out of range ({low} to {high})")
    return value


def _safe_next(target: str | None) -> str:
    """Only a path inside the console (no open redirect)."""
    if target and target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
