"""Keeps the label ``example.com/node`` of every project equal to the node it runs on.

The whole controller, built with the builder; run it as its own program::

    python -m caravanserai.informer.run examples/controller/label_syncer.py:controller \
        --server http://localhost:8080

or publish ``controller`` as an entry point of the group ``caravanserai.controllers``.
"""

from caravanserai.api import Project
from caravanserai.informer import Controller, Request, labels_changed, predicate

LABEL = "example.com/node"
node_moved = predicate(
    lambda c: not c.old or not c.new or c.old.status.node_ref != c.new.status.node_ref
)


async def sync(req: Request[Project]) -> None:
    project = req.object  # the cached project: read-only
    if project is None or project.metadata.labels.get(LABEL) == project.status.node_ref:
        return
    # A merge patch touches this one label; None removes it. The resourceVersion makes a
    # stale cache a 409, retried with backoff once the informer has the new version.
    patch = {"metadata": {"labels": {LABEL: project.status.node_ref}}}
    await req.client.projects.patch(
        req.name, patch, resource_version=project.metadata.resource_version
    )


controller = (
    Controller.for_(Project).with_filter(labels_changed | node_moved).workers(2).reconcile(sync)
)
