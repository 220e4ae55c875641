"""``highland``: the command line of CONTRACT.md §3. Thin wiring only; the work lives in the packages."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from highland import strict_json
from highland.settings import Settings, get_settings

if TYPE_CHECKING:  # the command modules import lazily: `highland --help` stays fast
    from highland.ingest.push import PushSummary

app = typer.Typer(help="Highland: progress of the Chongqing Internet-economy plan targets, live.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The embedded local stack: broker, ClickHouse, topics, schema.",
                        no_args_is_help=True)
dashboards_app = typer.Typer(help="Grafana dashboards, datasource and alert rules as code.",
                             no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(dashboards_app, name="dashboards")

out = Console()
err = Console(stderr=True)


def _print_json(data: object) -> None:
    sys.stdout.write(strict_json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


# --- stack ----------------------------------------------------------------------------------------

@stack_app.command("up")
def stack_up(
    as_cluster: Annotated[bool | None, typer.Option(
        "--cluster/--single",
        help="--cluster: three Kafka brokers, ZooKeeper and 2 shards x 2 replicas of ClickHouse; "
             "--single: one broker, one server; unset: as the last `up` (docs/local-stack.md)")] = None,
) -> None:
    """Install what is missing, start broker and ClickHouse, create topics, apply migrations."""
    from highland.stack import local

    try:
        report = local.up(get_settings(), as_cluster)
    except RuntimeError as exc:  # a broker that cannot be resolved, started or reached: its own words
        _error(f"stack up: {exc}")
        raise typer.Exit(2) from None
    out.print(f"started: {', '.join(report.started) or 'nothing (already running)'}")
    out.print(f"topics created: {', '.join(report.topics_created) or 'none (all exist)'}")
    out.print(f"migrations applied: {', '.join(report.migrations_applied) or 'none (up to date)'}")
    get_settings.cache_clear()  # `up` may have written the stack's topology into local.env
    _print_status()


@stack_app.command("down")
def stack_down() -> None:
    """Stop the processes `stack up` started (by pid); state stays on disk."""
    from highland.stack import local

    stopped = local.down(get_settings())
    out.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
def stack_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What runs where, and what a broker restart loses in the current mode."""
    from highland.stack import local

    rows = local.status(get_settings())
    if as_json:
        _print_json(rows)
    else:
        _print_status(rows)
    if not all(r["answers"] for r in rows):
        raise typer.Exit(1)


def _print_status(rows: list[dict[str, object]] | None = None) -> None:
    from highland.dashboards.terminal import status_table
    from highland.stack import local

    settings = get_settings()
    out.print(status_table(rows or local.status(settings), settings.lang))


@app.command("demo")
def demo_cmd() -> None:
    """The main job on the local stack: stack up, a worker, five years of synthetic feeds pushed."""
    from highland.demo import run_demo

    run_demo(get_settings(), say=out.print)
    out.print("next: `highland progress`, `highland board`, `highland alerts`, `highland dlq`, "
              "`highland dashboards build`; `highland stack down` stops everything")


@app.command("setup")
def setup_cmd(
    wait: Annotated[float, typer.Option("--wait", help="first wait up to this many seconds for Kafka and "
                                        "ClickHouse to answer (a deployment starts its parts in any order)")] = 0,
    print_sql: Annotated[bool, typer.Option("--print-sql", help="only print what setup would run on an "
                                            "empty database (DDL, data steps named), for review; connect to "
                                            "nothing")] = False,
) -> None:
    """Create the topics, apply the ClickHouse migrations and load the plan tables, on whatever
    Kafka and ClickHouse the settings name (production's one-off step; `stack up` does it locally)."""
    if print_sql:
        _print_schema(get_settings())
        return
    if wait > 0:
        from highland.wait import wait_for_services

        try:
            wait_for_services(get_settings(), wait, say=out.print)
        except TimeoutError as exc:
            _fail(str(exc), code=1)
    from highland.catalog.loader import catalog_at
    from highland.sinks.client import connect
    from highland.sinks.migrate import migrate
    from highland.sinks.plan_tables import sync_plan_tables
    from highland.topics import ensure_topics

    settings = get_settings()
    out.print(f"topics created: {', '.join(ensure_topics(settings)) or 'none (all exist)'}")
    out.print(f"migrations applied: {', '.join(migrate(settings)) or 'none (up to date)'}")
    sync_plan_tables(connect(settings), settings.clickhouse_database, catalog_at(get_settings().catalog_dir))
    out.print("plan tables: in sync with the catalog")


def _print_schema(settings: Settings) -> None:
    """The database administrator's review of a first `setup`: on one server or ON CLUSTER, as the
    settings say (sinks/migrate.py, ``review_script``)."""
    from highland.sinks.migrate import review_script
    from highland.sinks.topology import Topology

    typer.echo(review_script(settings.clickhouse_database, Topology.of(settings)))


# --- progress -------------------------------------------------------------------------------------

def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@app.command("progress")
def progress_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="YYYY-MM-DD (default: today, "
                                                             "capped at the plan's last day)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per indicator: actual vs. the plan's trajectory, status and projection."""
    from highland.catalog.loader import catalog_at
    from highland.sinks.client import connect
    from highland.sinks.progress import default_as_of, progress

    settings = get_settings()
    catalog = catalog_at(get_settings().catalog_dir)
    day = _parse_date(as_of) or default_as_of(
        catalog, datetime.now(ZoneInfo(catalog.plan.timezone)).date())
    rows = progress(connect(settings, reader=True), settings.clickhouse_database, catalog, day)  # duty staff's user
    if as_json:
        _print_json({"as_of": day.isoformat(), "indicators": [r.as_dict() for r in rows]})
        return
    from highland.dashboards.terminal import progress_summary, progress_table

    out.print(progress_table(rows, catalog, settings.lang, day))
    out.print(progress_summary(rows, settings.lang), markup=False, highlight=False)


@app.command("verify")
def verify_cmd(
    as_of: Annotated[list[str] | None, typer.Option("--as-of", help="YYYY-MM-DD, repeatable (default: today, "
                                                                   "capped at the plan's last day)")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="rebuild the per-day series from the events "
                                                          "(stop the workers first)")] = False,
) -> None:
    """Check the plan numbers against their definition: the per-day series the worker keeps vs. every
    event deduplicated at query time (slow: it reads all events), actuals and the baselines taken from
    data. Exit 1 on any difference."""
    from highland.catalog.loader import catalog_at
    from highland.sinks.client import connect
    from highland.sinks.daily_series import rebuild
    from highland.sinks.progress import default_as_of
    from highland.sinks.verification import differences

    settings = get_settings()
    catalog = catalog_at(get_settings().catalog_dir)
    client, db = connect(settings), settings.clickhouse_database
    days = [d for d in (_parse_date(a) for a in as_of or []) if d] or [
        default_as_of(catalog, datetime.now(ZoneInfo(catalog.plan.timezone)).date())]
    if repair:
        rebuild(client, db, catalog.plan.timezone)
    wrong = differences(client, db, catalog, days)
    for line in wrong:
        out.print(line, markup=False, highlight=False)
    out.print(f"{len(wrong)} difference(s) over {len(days)} date(s) and {len(catalog.indicators)} indicators "
              "(and their baselines taken from data)")
    if wrong:
        raise typer.Exit(1)


def _num(v: float | None) -> str:
    """Compact enough for an 80-column terminal: 12.35, 4,512, 15.0M."""
    if v is None:
        return "—"
    if abs(v) >= 1e6:
        return f"{v / 1e6:,.1f}M"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}"


# --- commands of later issues ---------------------------------------------------------------------

@app.command("worker")
def worker_cmd(
    loglevel: Annotated[str, typer.Option("--loglevel")] = "warning",
) -> None:
    """The stream processor (a Faust worker); several may run side by side in one group."""
    from highland.streams.app import run_worker

    run_worker(get_settings(), loglevel=loglevel)


@app.command("push")
def push_cmd(
    files: Annotated[list[Path], typer.Argument(help="CSV, .xlsx or JSON Lines (docs/agencies.md, Files)")],
    agency: Annotated[str | None, typer.Option("--agency", help="the agency pushing (default: the token's); "
                                                                "events must be its own")] = None,
    gateway: Annotated[str | None, typer.Option("--gateway", help="push through this gateway, e.g. "
                                                                  "https://gw.example (default: HIGHLAND_GATEWAY_URL; "
                                                                  "unset: straight to Kafka)")] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="a file holding the agency token "
                                                                         "(default: HIGHLAND_TOKEN_FILE, "
                                                                         "else HIGHLAND_TOKEN)")] = None,
    token: Annotated[str | None, typer.Option("--token", hidden=True)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate only: nothing is sent, no service "
                                                             "is needed")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    encoding: Annotated[str | None, typer.Option("--encoding", help="of CSV files: utf-8 or gb18030 "
                                                                     "(default: detected)")] = None,
    sheet: Annotated[str | None, typer.Option("--sheet", help="of .xlsx files: a sheet name or number "
                                                               "(default: the first)")] = None,
) -> None:
    """Push metric events; exit 0 only if every row was accepted and acknowledged (or, with
    --dry-run, would be accepted). Exit 1: rows rejected; 2: nothing was sent (bad file, no broker)."""
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from highland.catalog.loader import catalog_at
    from highland.ingest.producer import BrokerUnavailable
    from highland.ingest.push import push_files
    from highland.ingest.push_gateway import Gateway as GatewayClient
    from highland.ingest.push_gateway import GatewayUnavailable, Unauthenticated, push_through_gateway

    def fail(message: str) -> None:
        if as_json:  # a script reading stdout gets JSON whatever happens
            _print_json({"ok": False, "error": message})
        _fail(message)

    if token is not None:  # never used: a secret in the arguments is in every `ps` on the machine
        fail("--token is removed: a secret on the command line is visible to every user of the machine; "
             "put the token in a file (--token-file, or HIGHLAND_TOKEN_FILE) or in HIGHLAND_TOKEN")
    settings = get_settings()
    catalog = catalog_at(get_settings().catalog_dir)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    if agency is not None and not catalog.is_agency(agency):
        fail(f"{agency!r} is not a registered agency (see catalog/data/agencies.yaml)")
    url, secret = gateway or settings.gateway_url, ""
    if dry_run:  # offline: no token store, no gateway; the agency is the one named
        if agency is None:
            fail("--dry-run checks offline, so it needs --agency (no token store is asked)")
    else:
        secret = _agency_token(settings, token_file, fail)
        agency = _pushing_agency(settings, url, secret, agency, fail)
    assert agency is not None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), MofNCompleteColumn(),
               TextColumn("rows  {task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("checking" if dry_run else "pushing", total=None, rate="")

        def advance(rows: int) -> None:
            elapsed = bar.tasks[0].elapsed or 1e-9
            bar.update(task, advance=rows, rate=f"{bar.tasks[0].completed / elapsed:,.0f}/s")

        try:
            if url and not dry_run:
                summary = push_through_gateway(files, GatewayClient(url, secret), catalog, on_progress=advance,
                                               encoding=encoding, sheet=sheet)
            else:
                summary = push_files(files, agency, settings, catalog, on_progress=advance, dry_run=dry_run,
                                     encoding=encoding, sheet=sheet)
        except BrokerUnavailable as exc:
            fail(f"broker unavailable: {exc}")
        except (Unauthenticated, GatewayUnavailable) as exc:
            fail(str(exc))
        except ValueError as exc:
            fail(str(exc))
    if as_json:
        _print_json(summary.report())
    else:
        _print_push_report(summary)
    if not summary.ok:
        raise typer.Exit(1)


@app.command("template")
def template_cmd(
    agency: Annotated[str, typer.Option("--agency", help="the agency whose indicators fill the template")],
    fmt: Annotated[str, typer.Option("--format", help="xlsx or csv")] = "xlsx",
    out_path: Annotated[Path | None, typer.Option("--out", help="default: <agency>-template.<format>")] = None,
) -> None:
    """A file to fill in and push: the agency's indicators, units and regions, Chinese headers."""
    from highland.catalog.loader import catalog_at
    from highland.ingest.template import write_template

    catalog = catalog_at(get_settings().catalog_dir)
    if not catalog.is_agency(agency):
        _fail(f"{agency!r} is not a registered agency (see catalog/data/agencies.yaml)")
    if fmt not in ("xlsx", "csv"):
        _fail(f"--format {fmt!r}: use xlsx or csv")
    path = out_path or Path(f"{agency}-template.{fmt}")
    rows = write_template(catalog, agency, fmt, path)
    out.print(f"{path}: {rows} rows to fill in (事件编号, 数值, 观测时间)", markup=False, highlight=False)


def _print_push_report(summary: PushSummary) -> None:
    from highland.ingest.events import Reason
    from highland.ingest.names import REASON_ZH
    from highland.ingest.push import describe_encoding

    def say(line: str) -> None:  # details hold brackets and long text: no markup, no wrapping
        out.print(_printable(line), markup=False, highlight=False, soft_wrap=True)

    if summary.dry_run:
        say("dry run: nothing was sent")
    for f in summary.files:
        if (described := describe_encoding(f)) is not None:
            say(f"{f.file}: encoding {described}")
    say(f"{'would be accepted' if summary.dry_run else 'accepted'}: {summary.accepted}")
    say(f"rejected: {sum(summary.rejected.values())}"
        + "".join(f"\n  {reason}: {n}  {REASON_ZH[Reason(reason)]}" for reason, n in summary.rejected.most_common()))
    if summary.rejections:
        say("rejected rows (file:line  reason  原因  detail):")
        for r in summary.rejections:
            say(f"  {r.file}:{r.line}  {r.reason.value}  {REASON_ZH[r.reason]}  {r.detail}")
    for path in summary.rejected_files:
        say(f"rejected rows with reasons: {path}")
    if summary.undelivered:
        out.print(Text(f"not acknowledged by the broker: {summary.undelivered}", style="red")
                  + Text(_printable(f" ({summary.delivery_error})")))


def _printable(text: str) -> str:
    """``text`` with every control character but the line break shown as U+FFFD, as the tables show
    stored text (dashboards/terminal.py ``plain``): an escape sequence in a file's cell never reaches
    the terminal."""
    from highland.dashboards.terminal import plain

    return "\n".join(plain(line).plain for line in text.split("\n"))


def _error(message: str) -> None:
    """``error: message`` on stderr; the message printed as it is: it may carry what a user typed or a
    server said (brackets that rich would read as markup, control characters), never obeyed."""
    from highland.dashboards.terminal import plain

    err.print(Text("error: ", style="red") + plain(message))


def _fail(message: str, code: int = 2) -> None:
    _error(message)
    raise typer.Exit(code)


def _agency_token(settings: Settings, token_file: Path | None, fail: Callable[[str], None]) -> str:
    """The agency token of a push: from --token-file, HIGHLAND_TOKEN_FILE or HIGHLAND_TOKEN."""
    path = token_file or settings.token_file
    secret = ""
    if path is not None:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"cannot read the token file {path}: {exc.strerror}")
        if path.stat().st_mode & 0o077:
            err.print(f"warning: {path} can be read by other users; `chmod 600 {path}`", markup=False)
    elif settings.token is not None:
        secret = settings.token.get_secret_value().strip()
    if not secret:
        fail("no agency token: put it in a file (--token-file PATH, or HIGHLAND_TOKEN_FILE) or in HIGHLAND_TOKEN "
             "(an administrator issues it: `highland tokens issue --agency A`)")
    return secret


def _pushing_agency(settings: Settings, url: str | None, secret: str, named: str | None,
                    fail: Callable[[str], None]) -> str:
    """The agency the token belongs to, which decides whose rows a push may carry: asked of the
    gateway (``url``), else of the token store. ``named`` (--agency) must agree with it."""
    from highland.ingest.push_gateway import Gateway as GatewayClient
    from highland.ingest.push_gateway import GatewayUnavailable, Unauthenticated

    owner: str | None = None
    if url:
        try:
            owner = GatewayClient(url, secret).agency()
        except (Unauthenticated, GatewayUnavailable) as exc:
            fail(str(exc))
    else:
        from highland.sinks.tokens import Verifier, token_hash

        store = Verifier(settings)
        owner = store(secret)
        if owner is not None:
            store.record_use(token_hash(secret), owner)
    if owner is None:
        fail("unauthenticated: the token is unknown, revoked or expired")
    if named is not None and named != owner:
        fail(f"forbidden_agency: the token belongs to {owner!r}, not to {named!r}")
    return str(owner)


tokens_app = typer.Typer(help="Agency bearer tokens for the HTTP gateway (stored hashed).",
                         no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


def _expiry(text: str | None, option: str, future: bool = False) -> datetime | None:
    """A moment from --expires: a duration from now (90d, 12h, 30m, 45s) or an ISO date or time
    (a date or time without an offset is in the plan's zone, Asia/Shanghai). ``future``: a moment
    not after now is refused (a token expired when it is issued is a typo, not a token)."""
    import re
    from datetime import UTC, timedelta

    if text is None:
        return None
    duration = re.fullmatch(r"\s*(\d+)\s*([dhms])\s*", text)
    if duration:
        seconds = int(duration.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[duration.group(2)]
        moment = datetime.now(UTC) + timedelta(seconds=seconds)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r}: a duration (90d, 12h, 30m, 45s) or a date (2027-06-30)",
                                     param_hint=option) from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("Asia/Shanghai"))
    if future and moment <= datetime.now(UTC):
        raise typer.BadParameter(f"{text!r} is not in the future ({moment.isoformat(timespec='seconds')}): the "
                                 "token would be refused from the start", param_hint=option)
    return moment


def _deliver_token(token: str, out_file: Path | None) -> None:
    """The clear text, once: to stdout, or into a new file of mode 600 (what --token-file reads)."""
    import os

    if out_file is None:
        sys.stdout.write(token + "\n")
        return
    try:
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _fail(f"{out_file} exists: the token was not written (remove it, or choose another --out)")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    err.print(f"token written to {out_file} (mode 600)", markup=False)


@tokens_app.command("issue")
def tokens_issue(
    agency: Annotated[str, typer.Option("--agency")],
    expires: Annotated[str | None, typer.Option("--expires", help="90d, 12h, … or a date; default: "
                                                                  "until revoked")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="write the token to this new file "
                                                                "(mode 600) instead of stdout")] = None,
) -> None:
    """Issue a token for an agency; it is shown once and stored only as a hash."""
    from highland.catalog.loader import catalog_at
    from highland.sinks.client import connect
    from highland.sinks.tokens import issue

    settings = get_settings()
    if not catalog_at(get_settings().catalog_dir).is_agency(agency):
        _fail(f"{agency!r} is not a registered agency")
    until = _expiry(expires, "--expires", future=True)
    _deliver_token(issue(connect(settings), settings.clickhouse_database, agency, until), out_file)


@tokens_app.command("list")
def tokens_list(
    agency: Annotated[str | None, typer.Option("--agency", help="only this agency's")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="also revoked and expired tokens")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Tokens: id, agency, state, created, expires, last used (never the secret)."""
    from rich.table import Column

    from highland.sinks.client import connect
    from highland.sinks.tokens import list_tokens

    settings = get_settings()
    rows = [t.as_dict() for t in list_tokens(connect(settings), settings.clickhouse_database, agency)]
    rows = [r for r in rows if show_all or r["state"] == "valid"]
    if as_json:
        _print_json(rows)
        return
    table = Table("agency", "state", "created (UTC)", "expires (UTC)", "last used (UTC)")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=12))  # whole: it is what revoke takes
    for r in rows:
        table.add_row(*(str(r[k] or "—")[:19].replace("T", " ") for k in
                        ("id", "agency", "state", "created_at", "expires_at", "last_used_at")))
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str | None, typer.Argument(help="the id `tokens list` shows")] = None,
    agency: Annotated[str | None, typer.Option("--agency", help="revoke every token of this agency")] = None,
) -> None:
    """Revoke one token by its id, or every token of an agency (--agency)."""
    from highland.sinks.client import connect
    from highland.sinks.tokens import TokenError, revoke, revoke_all

    settings = get_settings()
    if (token_id is None) == (agency is None):
        _fail("name one token id, or --agency for all of an agency's tokens")
    client = connect(settings)
    if agency is not None:
        n = revoke_all(client, settings.clickhouse_database, agency)
        out.print(f"revoked {n} token(s) of {agency}", markup=False)
        return
    try:
        token = revoke(client, settings.clickhouse_database, str(token_id))
    except TokenError as exc:
        _fail(str(exc))
    out.print(f"revoked token {token.id} of {token.agency}", markup=False)


@tokens_app.command("rotate")
def tokens_rotate(
    token_id: Annotated[str, typer.Argument(help="the id `tokens list` shows")],
    expires: Annotated[str | None, typer.Option("--expires", help="of the new token: 90d, 12h, … or a "
                                                                  "date; default: until revoked")] = None,
    keep_old: Annotated[str | None, typer.Option("--keep-old", help="leave the old token valid this much "
                                                                    "longer (e.g. 1d) instead of revoking "
                                                                    "it now")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="write the new token to this new file "
                                                                "(mode 600) instead of stdout")] = None,
) -> None:
    """A new token for the same agency; the old one revoked (or kept valid for --keep-old)."""
    from datetime import UTC

    from highland.sinks.client import connect
    from highland.sinks.tokens import TokenError, rotate

    settings = get_settings()
    grace, until = _expiry(keep_old, "--keep-old"), _expiry(expires, "--expires", future=True)
    try:
        token, old = rotate(connect(settings), settings.clickhouse_database, token_id, until,
                            None if grace is None else grace - datetime.now(UTC))
    except TokenError as exc:
        _fail(str(exc))
    err.print(f"token {old.id} of {old.agency} " + ("revoked" if grace is None else
                                                    f"valid until {grace.isoformat(timespec='seconds')}"),
              markup=False)
    _deliver_token(token, out_file)


@app.command("gateway")
def gateway_cmd(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
) -> None:
    """The HTTP gateway: POST /v1/events and GET /v1/dead-letters with an agency bearer token;
    GET /health, /openapi.yaml (docs/agencies.md)."""
    from highland.catalog.loader import catalog_at
    from highland.ingest.gateway import serve
    from highland.sinks.tokens import verifier

    settings = get_settings()
    host, port = host or settings.gateway_host, port or settings.gateway_port
    err.print(f"gateway listening on http://{host}:{port}/v1/events")
    store = verifier(settings)  # one connection: token checks, "last used" notes, dead letters
    serve(settings, catalog_at(get_settings().catalog_dir), store, host, port,
          record_use=store.record_use, read_dead_letters=store.dead_letters)


@app.command("alerts")
def alerts_cmd(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 200,
) -> None:
    """Status changes and stale feeds, newest first."""
    from highland.sinks.alerts import list_alerts
    from highland.sinks.client import connect

    settings = get_settings()
    rows = list_alerts(connect(settings, reader=True), settings.clickhouse_database, limit)
    if as_json:
        _print_json(rows)
        return
    from highland.catalog.loader import catalog_at
    from highland.dashboards.terminal import alerts_table

    out.print(alerts_table(rows, catalog_at(get_settings().catalog_dir), settings.lang))


@app.command("dlq")
def dlq_cmd(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 200,
) -> None:
    """Rejected events with their reasons, newest first (as stored by the worker)."""
    from highland.sinks.client import connect
    from highland.sinks.dead_letters import counts_by_reason, list_dead_letters

    settings = get_settings()
    client = connect(settings)
    rows = list_dead_letters(client, settings.clickhouse_database, limit)
    if as_json:
        _print_json(rows)
        return
    from highland.catalog.loader import catalog_at
    from highland.dashboards.terminal import dlq_summary, dlq_table
    from highland.ingest.names import REASON_ZH

    reasons = {r.value: text for r, text in REASON_ZH.items()}
    out.print(dlq_table(rows, catalog_at(get_settings().catalog_dir), settings.lang, reasons))
    counts = counts_by_reason(client, settings.clickhouse_database)
    out.print(dlq_summary(counts, settings.lang, reasons), markup=False, highlight=False)


@app.command("board")
def board_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="YYYY-MM-DD (default: as `progress`)")] = None,
    refresh: Annotated[float, typer.Option("--refresh", help="seconds between refreshes")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="draw one frame and exit")] = False,
) -> None:
    """A live terminal board for duty staff (80 columns, works over ssh)."""
    from highland.dashboards.board import run_board

    run_board(get_settings(), as_of=_parse_date(as_of), refresh_s=refresh, once=once)


@app.command("report")
def report_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="FILE.html or FILE.pdf")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="YYYY-MM-DD (default: as `progress`)")] = None,
    period: Annotated[str, typer.Option("--period", help="month | quarter | year")] = "month",
    lang: Annotated[str | None, typer.Option("--lang", help="zh | en (default: HIGHLAND_LANG)")] = None,
) -> None:
    """A monthly, quarterly or yearly report (月报 / 季报 / 年报) as HTML or PDF (docs/reports.md)."""
    from highland.catalog.loader import catalog_at
    from highland.dashboards.report import Period, gather
    from highland.dashboards.report_render import LANGUAGES, render_html, render_pdf
    from highland.sinks.client import connect
    from highland.sinks.progress import default_as_of

    if period not in {p.value for p in Period}:
        _fail(f"--period must be one of: {', '.join(p.value for p in Period)}")
    if out_path.suffix.lower() not in {".html", ".pdf"}:
        _fail("--out must end in .html or .pdf")
    if not out_path.parent.is_dir():  # said now, not after a minute of reading
        _fail(f"--out: there is no folder {out_path.parent}")
    settings = get_settings()
    lang = lang or settings.lang
    if lang not in LANGUAGES:
        _fail(f"--lang must be one of: {', '.join(LANGUAGES)}")
    catalog = catalog_at(get_settings().catalog_dir)
    now = datetime.now(ZoneInfo(catalog.plan.timezone))
    day = _parse_date(as_of) or default_as_of(catalog, now.date())
    # The read-only user, as `progress`: whoever writes reports for officials needs no write rights.
    report = gather(connect(settings, reader=True), settings.clickhouse_database, catalog, day, Period(period))
    html = render_html(report, catalog, "en" if lang == "en" else "zh", now)
    if out_path.suffix.lower() == ".pdf":
        out_path.write_bytes(render_pdf(html))
    else:
        out_path.write_text(html, encoding="utf-8")
    out.print(f"wrote {out_path}: {len(report.entries)} indicators, {len(report.slipped)} slipped, "
              f"{len(report.stopped)} stopped feeds", markup=False)


@dashboards_app.command("build")
def dashboards_build(
    out_dir: Annotated[Path | None, typer.Option("--out", help="default: HIGHLAND_DASHBOARDS_OUT")] = None,
) -> None:
    """Write dashboards, datasource, alert rules and contact points as Grafana provisioning files."""
    from highland.dashboards.build import build_all

    settings = get_settings()
    for path in build_all(settings, out_dir or settings.dashboards_out):
        out.print(f"wrote {path}")


@dashboards_app.command("publish")
def dashboards_publish(
    out_dir: Annotated[Path | None, typer.Option("--out", help="the folder `build` wrote")] = None,
) -> None:
    """Publish the built dashboards and alert rules through Grafana's HTTP API (idempotent by uid)."""
    from highland.dashboards.publish import publish

    settings = get_settings()
    for line in publish(settings, out_dir or settings.dashboards_out):
        out.print(line)


catalog_app = typer.Typer(help="The plan catalog: list the one in use, check a folder (docs/catalog.md).")
app.add_typer(catalog_app, name="catalog")


@catalog_app.callback(invoke_without_command=True)
def catalog_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the plan catalog in use (HIGHLAND_CATALOG_DIR, else the 13th plan shipped)."""
    from highland.catalog.loader import CatalogError, catalog_at

    if ctx.invoked_subcommand is not None:
        return
    try:
        catalog = catalog_at(get_settings().catalog_dir)
    except CatalogError as exc:
        _fail(f"the catalog in HIGHLAND_CATALOG_DIR is broken:\n{exc}", code=1)
    if as_json:
        _print_json([i.model_dump(mode="json") for i in catalog.indicators])
        return
    from highland.dashboards.terminal import catalog_table

    out.print(catalog_table(catalog, get_settings().lang))
    out.print(f"{catalog.plan.code} {catalog.plan.baseline_year}-{catalog.plan.target_year}: "
              f"{len(catalog.indicators)} indicators, {len(catalog.agencies)} agencies, "
              f"{len(catalog.districts)} districts")


@catalog_app.command("validate")
def catalog_validate(directory: Annotated[Path, typer.Argument(help="a folder with plan.yaml, agencies.yaml, "
                                                                     "districts.yaml")]) -> None:
    """Check a catalog folder before pointing HIGHLAND_CATALOG_DIR at it: every problem as file:line,
    exit 1 if there is any."""
    from highland.catalog.loader import load_catalog, validate_catalog

    problems = validate_catalog(directory)
    for line in problems:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if problems:
        out.print(f"{len(problems)} problem(s)", markup=False)
        raise typer.Exit(1)
    catalog = load_catalog(directory)
    out.print(f"{directory}: valid: {catalog.plan.code} ({catalog.plan.document}), "
              f"{catalog.plan.baseline_year}-{catalog.plan.target_year}, {len(catalog.indicators)} indicators, "
              f"{len(catalog.agencies)} agencies, {len(catalog.districts)} districts", markup=False, highlight=False)


kafka_app = typer.Typer(help="Who may write what on Kafka: SCRAM users and ACLs (docs/security.md, \"Direct Kafka\").",
                        no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")


@kafka_app.command("grant")
def kafka_grant(
    producers: Annotated[list[str] | None, typer.Option("--producer", help="a trusted internal producer's "
                                                        "principal (repeatable)")] = None,
    workers: Annotated[list[str] | None, typer.Option("--worker", help="a worker's principal (repeatable)")] = None,
) -> None:
    """Create every catalog agency's own topic and its ACLs (write that topic, nothing else) and its
    producer quota (HIGHLAND_KAFKA_AGENCY_PRODUCER_BYTES_PER_S), the trusted producers' ACLs (the
    shared events and dead-letter topics) and the workers' (read the events topics, write dead
    letters and alerts, their groups). Idempotent; run as a super user."""
    from highland.catalog.loader import catalog_at
    from highland.topics import agency_principal, ensure_topics, grant, set_producer_quota, topic_names

    settings = get_settings().model_copy(update={"agency_topics": True})
    agencies = [a.code for a in catalog_at(settings.catalog_dir).agencies]
    created = ensure_topics(settings, topic_names(settings))
    count = grant(settings, agencies, producers if producers is not None else ["highland-gateway"],
                  workers if workers is not None else ["highland-worker"])
    set_producer_quota(settings, [agency_principal(a) for a in agencies], settings.kafka_agency_producer_bytes_per_s)
    out.print(f"{len(created)} topic(s) created; {count} ACLs in place for {len(agencies)} agencies; each "
              f"agency's producers at most {settings.kafka_agency_producer_bytes_per_s} bytes/s", markup=False)


@kafka_app.command("credential")
def kafka_credential(
    user: Annotated[str | None, typer.Argument(help="the Kafka user name")] = None,
    agency: Annotated[str | None, typer.Option("--agency", help="the agency whose client this is "
                                               "(user agency-<code>)")] = None,
) -> None:
    """Create or replace a SCRAM credential; the password is read from standard input, never an argument."""
    from highland.topics import agency_principal, set_credential

    if (user is None) == (agency is None):
        _fail("name a user or --agency, not both")
    name = user or agency_principal(agency or "")
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 16:
        _fail("the password (one line on standard input) must have at least 16 characters")
    set_credential(get_settings(), name, password)
    out.print(f"credential of {name} set", markup=False)


def main() -> None:
    """The console script: commands that reach ClickHouse or Kafka fail with one clear line, not a
    traceback, when those are unreachable or refuse."""
    from clickhouse_driver.errors import Error as ClickHouseError
    from kafka.errors import KafkaError

    from highland.catalog.loader import CatalogError

    # The driver logs each failed connection with a traceback; the message below says it once.
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    settings = get_settings()
    try:
        app()
    except (ClickHouseError, EOFError, ConnectionError, TimeoutError) as exc:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        first = text.strip().splitlines()[0].removeprefix("DB::Exception: ").split(". Stack trace")[0]
        _error(f"ClickHouse at {settings.clickhouse_host}:{settings.clickhouse_port} "
                  f"(database {settings.clickhouse_database}): {first}")
        sys.exit(2)
    except KafkaError as exc:
        _error(f"Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}")
        sys.exit(2)
    except CatalogError as exc:  # HIGHLAND_CATALOG_DIR names a broken plan: every problem, file:line
        _error(f"the plan catalog in {settings.catalog_dir} is broken (`highland catalog validate`):")
        for problem in exc.problems:
            _error(problem)
        sys.exit(2)
