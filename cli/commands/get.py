"""``caractrl get projects|nodes [NAME...]``: tables, wide, json, yaml, name; ``--watch``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import click

from caravanserai.api import NotFound, ResourceKind
from caravanserai.api.event import Event, RecordKind
from caravanserai.api.project import ProjectPhase
from caravanserai.client.http import CaravanseraiClient, ListOptions, ObjectList
from caravanserai.informer.cache import DeltaType, index_by_node_ref
from cli.context import State, get_state, global_options
from cli.errors import PartialFailure, echo_error, not_found
from cli.events import EVENT_HEADERS, event_row, events_table, parse_for, sort_events
from cli.formatting import Table
from cli.kinds import GET_KIND, complete_names, resources_of
from cli.options import SuggestingChoice
from cli.printers import (
    OutputFormat,
    ResourcePrinter,
    dump_json,
    dump_yaml,
    list_document,
    wire,
)
from cli.watching import EVENT_NAMES, name_options, reflect

# Every phase a project can be seen in (a Terminated one is removed a moment later, but a
# watch or a script polling for it may still see it).
SELECTABLE_PHASES = tuple(p.value for p in ProjectPhase)


def _plural(kind: ResourceKind) -> str:
    return kind.plural


@click.command(
    "get", short_help="List projects, nodes or events (table, wide, json, yaml, name)."
)
@click.argument("resource", type=GET_KIND)
@click.argument("names", nargs=-1, shell_complete=complete_names)
@click.option(
    "--phase", multiple=True, type=SuggestingChoice(SELECTABLE_PHASES, case_sensitive=False),
    help="Only projects in this phase (repeatable: any of them).",
)
@click.option("-l", "--selector", metavar="SELECTOR",
              help="Label selector, e.g. app=web,tier!=db or 'env in (prod,staging)'.")
@click.option("--field-selector", metavar="SELECTOR",
              help="Field selector: metadata.name, status.phase, status.nodeRef (nodes: "
              "status.state), e.g. status.nodeRef=node-01.")
@click.option("-w", "--watch", is_flag=True,
              help="After the list, print a new row for every change (Ctrl-C to stop).")
@click.option("--output-watch-events", is_flag=True,
              help="With --watch: add an EVENT column (ADDED, MODIFIED, DELETED).")
@click.option("--sort-by", metavar="PATH",
              help="Sort the list by a JSONPath field, e.g. .metadata.creationTimestamp.")
@click.option("--for", "for_", metavar="KIND/NAME",
              help="Events only: those about this object, e.g. project/web or node/node-01.")
@global_options
def get(
    resource: ResourceKind | RecordKind,
    names: tuple[str, ...],
    phase: tuple[str, ...],
    selector: str | None,
    field_selector: str | None,
    watch: bool,
    output_watch_events: bool,
    sort_by: str | None,
    for_: str | None,
) -> None:
    """Show projects, nodes or events as a table (or -o wide|json|yaml|name).

    \b
    Examples:
      caractrl get projects
      caractrl get projects my-project
      caractrl get projects --phase=Running
      caractrl get projects -l app=web -o wide
      caractrl --output json get projects my-project
      caractrl get nodes
      caractrl get projects -w
      caractrl get projects -o jsonpath='{.items[*].metadata.name}'
      caractrl get projects -o custom-columns=NAME:.metadata.name,NODE:.status.nodeRef
      caractrl get projects --sort-by=.metadata.creationTimestamp
      caractrl get events
      caractrl get events --for project/my-project -w
      caractrl get events --field-selector involvedObject.name=my-project
    """
    state = get_state()
    if isinstance(resource, RecordKind):
        if phase or names or output_watch_events or sort_by:
            raise click.UsageError(
                "get events takes --for, --selector, --field-selector and --watch only"
            )
        if state.output not in (OutputFormat.TABLE, OutputFormat.WIDE, OutputFormat.JSON,
                                OutputFormat.YAML):
            raise click.UsageError("get events prints a table, -o json or -o yaml")
        terms = [field_selector] if field_selector else []
        if for_:
            kind, name = parse_for(for_)
            terms += [f"involvedObject.kind={kind}", f"involvedObject.name={name}"]
        options = ListOptions.of(label_selector=selector, field_selector=",".join(terms))
        if watch:
            state.run_until_interrupted(lambda c: _watch_events(c, options))
        else:
            state.run(lambda c: _list_events(c, state, options))
        return
    if for_:
        raise click.UsageError("--for applies only to events")
    if phase and resource.kind != "Project":
        raise click.UsageError("--phase applies only to projects")
    if names and (phase or selector or field_selector):
        raise click.UsageError(
            "names cannot be combined with --phase, --selector or --field-selector"
        )
    if watch and len(names) > 1:
        raise click.UsageError("--watch follows all objects or exactly one name")
    if output_watch_events and not watch:
        raise click.UsageError("--output-watch-events needs --watch")
    if state.template or sort_by:
        _check_templates(state.template, sort_by)
    options = ListOptions.of(
        label_selector=selector, field_selector=field_selector, phase=phase or None
    )
    if watch:
        if names:
            options = name_options(names[0])
        state.run_until_interrupted(
            lambda c: _watch(c, state, resource, options, bool(names), output_watch_events)
        )
        return
    if names:
        state.run(lambda c: _get_names(c, state, resource, names))
    else:
        state.run(lambda c: _list(c, state, resource, options, sort_by))


def _check_templates(template: str, sort_by: str | None) -> None:
    """A bad template or path is a usage error before anything is asked of the server."""
    from cli.templates import TemplateError, TemplatePrinter, sort_key

    try:
        if template:
            TemplatePrinter(template, click.echo)
        if sort_by:
            sort_key(sort_by)
    except TemplateError as exc:
        raise click.UsageError(str(exc)) from None


def _template_printer(state: State) -> Any:
    from cli.templates import TemplatePrinter

    return TemplatePrinter(state.template, click.echo)


def _printer(
    state: State,
    kind: ResourceKind,
    counts: Mapping[str, int] | None = None,
    *,
    watch_events: bool = False,
) -> ResourcePrinter:
    return ResourcePrinter(
        kind.kind,
        state.output,
        click.echo,
        watch_events=watch_events,
        project_counts=(lambda: counts) if counts is not None else None,
    )


async def _project_counts(
    client: CaravanseraiClient, state: State, kind: ResourceKind
) -> dict[str, int] | None:
    """Projects per node, for the PROJECTS column of ``get nodes -o wide`` only."""
    if kind.kind != "Node" or state.output is not OutputFormat.WIDE:
        return None
    counts: dict[str, int] = {}
    for p in (await client.projects.list_all()).items:
        if p.status.node_ref:
            counts[p.status.node_ref] = counts.get(p.status.node_ref, 0) + 1
    return counts


async def _list(
    client: CaravanseraiClient, state: State, kind: ResourceKind, options: ListOptions,
    sort_by: str | None = None,
) -> None:
    result: ObjectList[Any] = await resources_of(client, kind).list_all(options)
    if sort_by:
        from cli.templates import sort_key

        key = sort_key(sort_by)
        result.items.sort(key=lambda m: key(wire(m)))
    if state.output is OutputFormat.TEMPLATE:
        if not result.items and state.template.startswith("custom-columns="):
            click.echo(f"No {_plural(kind)} found.", err=True)
            return
        _template_printer(state).print_list(
            list_document(kind.kind, [wire(m) for m in result.items], result.resource_version)
        )
        return
    printer = _printer(state, kind, await _project_counts(client, state, kind))
    if not result.items and printer.tabular:
        # stderr, as kubectl: stdout stays empty for scripts counting lines.
        click.echo(f"No {_plural(kind)} found.", err=True)
        return
    printer.print_many(result.items, resource_version=result.resource_version)


async def _get_names(
    client: CaravanseraiClient, state: State, kind: ResourceKind, names: Sequence[str]
) -> None:
    resources = resources_of(client, kind)
    found: list[Any] = []
    missing: list[str] = []
    for name in names:
        try:
            found.append(await resources.get(name))
        except NotFound:
            missing.append(name)
    if state.output is OutputFormat.TEMPLATE:
        tp = _template_printer(state)
        if len(names) == 1 and found:
            tp.print_object(wire(found[0]))
        elif found:
            tp.print_list(list_document(kind.kind, [wire(m) for m in found]))
        if len(names) == 1 and missing:
            raise not_found(kind.kind, missing[0])
        for name in missing:
            echo_error(not_found(kind.kind, name))
        if missing:
            raise PartialFailure()
        return
    printer = _printer(state, kind, await _project_counts(client, state, kind))
    if len(names) == 1 and found:
        printer.print_one(found[0])
    elif found:
        printer.print_many(found)
    if len(names) == 1 and missing:
        raise not_found(kind.kind, missing[0])
    for name in missing:
        echo_error(not_found(kind.kind, name))
    if missing:
        raise PartialFailure()


async def _watch(
    client: CaravanseraiClient,
    state: State,
    kind: ResourceKind,
    options: ListOptions,
    one_name: bool,
    watch_events: bool,
) -> None:
    resources = resources_of(client, kind)
    seed: ObjectList[Any] = await resources.list_all(options)
    if one_name and not seed.items:
        name = (options.field_selector or "=").split("=", 1)[1]
        raise not_found(kind.kind, name)
    if state.output is OutputFormat.TEMPLATE:
        # Every event's object through the template, as kubectl get -w -o jsonpath does.
        tp = _template_printer(state)
        for obj in seed.items:
            tp.print_object(wire(obj))
        async with reflect(resources, options, seed) as (_, queue):
            while True:
                for delta in await queue.get():
                    tp.print_object(wire(delta.new))
    wide_nodes = kind.kind == "Node" and state.output is OutputFormat.WIDE
    async with _node_project_index(client, wide_nodes) as counts:
        printer = ResourcePrinter(
            kind.kind,
            state.output,
            click.echo,
            watch_events=watch_events,
            project_counts=counts,
        )
        printer.presize_for_watch()
        printer.print_events(seed.items, "ADDED")
        async with reflect(resources, options, seed) as (_, queue):
            while True:
                for delta in await queue.get():
                    printer.print_event(delta.new, EVENT_NAMES[delta.type])


@asynccontextmanager
async def _node_project_index(
    client: CaravanseraiClient, enabled: bool
) -> AsyncIterator[Callable[[], Mapping[str, int]] | None]:
    """For ``get nodes -o wide -w``: a live projects cache, so PROJECTS stays true."""
    if not enabled:
        yield None
        return
    seed = await client.projects.list_all()
    async with reflect(
        client.projects, ListOptions(), seed, indexers={"node": index_by_node_ref}, deltas=False
    ) as (cache, _):
        yield lambda: {n: len(cache.index_keys("node", n)) for n in cache.index_values("node")}


async def _list_events(client: CaravanseraiClient, state: State, options: ListOptions) -> None:
    result = await client.events.list_all(options)
    if state.output in (OutputFormat.JSON, OutputFormat.YAML):
        doc = list_document(
            "Event", [e.to_wire() for e in sort_events(result.items)], result.resource_version
        )
        click.echo(dump_json(doc) if state.output is OutputFormat.JSON else dump_yaml(doc))
        return
    if not result.items:
        click.echo("No events found.", err=True)
        return
    for line in events_table(result.items):
        click.echo(line)


async def _watch_events(client: CaravanseraiClient, options: ListOptions) -> None:
    """The current events, then a row for every new occurrence (a new event or a count
    bump), as ``kubectl get events -w``; expiries print nothing."""
    seed: ObjectList[Event] = await client.events.list_all(options)
    table = Table(EVENT_HEADERS)
    now = datetime.now(UTC)
    rows = [event_row(e, now) for e in sort_events(seed.items)]
    for line in table.render(rows):
        click.echo(line)
    async with reflect(client.events, options, seed) as (_, queue):
        while True:
            for delta in await queue.get():
                if delta.type in (DeltaType.ADDED, DeltaType.UPDATED):
                    row = event_row(delta.new, datetime.now(UTC))
                    for line in table.render([row], header=False):
                        click.echo(line)


__all__ = ["SELECTABLE_PHASES", "get"]
