"""Keeps the annotation ``example.com/projects`` of every node equal to the number of
projects on it: a table read from an indexer of the shared project informer.

    python -m caravanserai.informer.run examples/controller/node_table.py:controller

A project moving from node A to B changes both counts: ``map_to`` sees the old and the new
project, so both nodes are reconciled.
"""

from caravanserai.api import Node, Project
from caravanserai.informer import Controller, Request, annotations_changed, index_by_node_ref

KEY = "example.com/projects"
BY_NODE = {"nodeRef": index_by_node_ref}  # one function per index name, process-wide


async def count(req: Request[Node]) -> None:
    projects = req.ctx.informers.projects(indexers=BY_NODE)  # the shared informer
    n = str(len(projects.cache.index_keys("nodeRef", req.name)))
    if req.object is not None and req.object.metadata.annotations.get(KEY) != n:
        await req.client.nodes.patch(req.name, {"metadata": {"annotations": {KEY: n}}})


controller = (
    Controller.for_(Node, predicate=annotations_changed)
    .watches(
        Project, map_to=lambda c: {p.status.node_ref for p in c.objects} - {None}, indexers=BY_NODE
    )
    .reconcile(count)
)
