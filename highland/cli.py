"""``highland``: the command line of CONTRACT.md §3. Thin wiring only; the work lives in the packages."""

from __future__ import annotations

import logging
import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table

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
        err.print(f"[red]error:[/] stack up: {exc}")
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
def setup_cmd() -> None:
    """Create the topics, apply the ClickHouse migrations and load the plan tables, on whatever
    Kafka and ClickHouse the settings name (production's one-off step; `stack up` does it locally)."""
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
    rows = progress(connect(settings), settings.clickhouse_database, catalog, day)
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
    agency: Annotated[str, typer.Option("--agency", help="the agency pushing; events must be its own")],
    token: Annotated[str | None, typer.Option("--token", help="verify this agency token first")] = None,
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

    def fail(message: str) -> None:
        if as_json:  # a script reading stdout gets JSON whatever happens
            _print_json({"ok": False, "error": message})
        _fail(message)

    settings = get_settings()
    catalog = catalog_at(get_settings().catalog_dir)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    if not catalog.is_agency(agency):
        fail(f"{agency!r} is not a registered agency (see catalog/data/agencies.yaml)")
    if token is not None and not dry_run:  # a dry run touches no service, the token store included
        _check_token(settings, agency, token)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), MofNCompleteColumn(),
               TextColumn("rows  {task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("checking" if dry_run else "pushing", total=None, rate="")

        def advance(rows: int) -> None:
            elapsed = bar.tasks[0].elapsed or 1e-9
            bar.update(task, advance=rows, rate=f"{bar.tasks[0].completed / elapsed:,.0f}/s")

        try:
            summary = push_files(files, agency, settings, catalog, on_progress=advance, dry_run=dry_run,
                                 encoding=encoding, sheet=sheet)
        except BrokerUnavailable as exc:
            fail(f"broker unavailable: {exc}")
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
        out.print(line, markup=False, highlight=False, soft_wrap=True)

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
        out.print(f"[red]not acknowledged by the broker: {summary.undelivered}[/] ({summary.delivery_error})")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def _check_token(settings: Settings, agency: str, token: str) -> None:
    from highland.sinks.client import connect
    from highland.sinks.tokens import agency_of

    owner = agency_of(connect(settings), settings.clickhouse_database, token)
    if owner != agency:
        _fail(f"unauthenticated: the token is not a valid token of {agency!r}")


tokens_app = typer.Typer(help="Agency bearer tokens for the HTTP gateway (stored hashed).",
                         no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("issue")
def tokens_issue(agency: Annotated[str, typer.Option("--agency")]) -> None:
    """Issue a token for an agency; it is printed once and stored only as a hash."""
    from highland.catalog.loader import catalog_at
    from highland.sinks.client import connect
    from highland.sinks.tokens import issue

    settings = get_settings()
    if not catalog_at(get_settings().catalog_dir).is_agency(agency):
        _fail(f"{agency!r} is not a registered agency")
    sys.stdout.write(issue(connect(settings), settings.clickhouse_database, agency) + "\n")


@tokens_app.command("revoke")
def tokens_revoke(agency: Annotated[str, typer.Option("--agency")]) -> None:
    """Revoke every token of an agency."""
    from highland.sinks.client import connect
    from highland.sinks.tokens import revoke_all

    settings = get_settings()
    n = revoke_all(connect(settings), settings.clickhouse_database, agency)
    out.print(f"revoked {n} token(s) of {agency}")


@app.command("gateway")
def gateway_cmd(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
) -> None:
    """The HTTP gateway: POST /v1/events with an agency bearer token; GET /health."""
    from highland.catalog.loader import catalog_at
    from highland.ingest.gateway import serve
    from highland.sinks.tokens import verifier

    settings = get_settings()
    host, port = host or settings.gateway_host, port or settings.gateway_port
    err.print(f"gateway listening on http://{host}:{port}/v1/events")
    serve(settings, catalog_at(get_settings().catalog_dir), verifier(settings), host, port)


@app.command("alerts")
def alerts_cmd(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 200,
) -> None:
    """Status changes and stale feeds, newest first."""
    from highland.sinks.alerts import list_alerts
    from highland.sinks.client import connect

    settings = get_settings()
    rows = list_alerts(connect(settings), settings.clickhouse_database, limit)
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
    lang: Annotated[str, typer.Option("--lang", help="zh | en")] = "zh",
) -> None:
    """A monthly, quarterly or yearly report (月报 / 季报 / 年报) as HTML or PDF (docs/reports.md)."""
    from highland.catalog.loader import catalog_at
    from highland.dashboards.report import Period, gather
    from highland.dashboards.report_render import LANGUAGES, render_html, render_pdf
    from highland.sinks.client import connect
    from highland.sinks.progress import default_as_of

    if period not in {p.value for p in Period}:
        _fail(f"--period must be one of: {', '.join(p.value for p in Period)}")
    if lang not in LANGUAGES:
        _fail(f"--lang must be one of: {', '.join(LANGUAGES)}")
    if out_path.suffix.lower() not in {".html", ".pdf"}:
        _fail("--out must end in .html or .pdf")
    settings = get_settings()
    catalog = catalog_at(get_settings().catalog_dir)
    now = datetime.now(ZoneInfo(catalog.plan.timezone))
    day = _parse_date(as_of) or default_as_of(catalog, now.date())
    report = gather(connect(settings), settings.clickhouse_database, catalog, day, Period(period))
    html = render_html(report, catalog, lang, now)
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
    table = Table("indicator", "kind", "unit", "baseline", "target", "path", "agency")
    for i in catalog.indicators:
        stated = i.baseline.stated
        base = f"{_num(stated)} ({i.baseline.year})" if stated is not None else f"from data ({i.baseline.year})"
        table.add_row(i.code, i.kind.value, i.unit, base, f"{_num(i.target.value)} ({i.target.year})",
                      i.trajectory.value, i.agency)
    out.print(table)
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


def main() -> None:
    """The console script: commands that reach ClickHouse or Kafka fail with one clear line, not a
    traceback, when those are unreachable or refuse."""
    from clickhouse_driver.errors import Error as ClickHouseError
    from kafka.errors import KafkaError

    # The driver logs each failed connection with a traceback; the message below says it once.
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    settings = get_settings()
    try:
        app()
    except (ClickHouseError, EOFError, ConnectionError, TimeoutError) as exc:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        first = text.strip().splitlines()[0].removeprefix("DB::Exception: ").split(". Stack trace")[0]
        err.print(f"[red]error:[/] ClickHouse at {settings.clickhouse_host}:{settings.clickhouse_port} "
                  f"(database {settings.clickhouse_database}): {first}")
        sys.exit(2)
    except KafkaError as exc:
        err.print(f"[red]error:[/] Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}")
        sys.exit(2)
