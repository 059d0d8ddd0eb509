"""Compose files as input: ``compose.yaml`` → a Project manifest (pure apart from reading
``env_file``s and ``.env``).

A document is a Compose file when it has a top-level ``services`` mapping and no
``apiVersion``. The project is named by ``-p/--project-name``, else the file's ``name:``,
else its directory (as ``docker compose`` does, normalised to a DNS label). Variables are
interpolated as Compose does (``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``, ``$$``) from the
process environment over the ``.env`` file next to the Compose file.

Every key that is not mapped is reported with its service: an error where ignoring it would
change what runs (``build`` without ``image``, bind mounts, ``privileged``, ...), a warning
otherwise. Nothing is dropped silently, except ``x-`` extension keys and ``version``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from caravanserai.api.quantities import format_memory, parse_cpus, parse_memory

API_VERSION = "caravanserai/v1"

# Keys whose absence would change what runs: an error, with what to do instead.
_UNSUPPORTED_ERRORS: dict[str, str] = {
    "privileged": "not supported (containers run unprivileged)",
    "cap_add": "not supported (no extra capabilities)",
    "cap_drop": "not supported",
    "network_mode": "not supported (every project has its own network)",
    "pid": "not supported", "ipc": "not supported", "uts": "not supported",
    "userns_mode": "not supported",
    "devices": "not supported", "device_cgroup_rules": "not supported",
    "secrets": "not supported (pass values with environment)",
    "configs": "not supported (bake files into the image)",
    "user": "not supported (set USER in the image)",
    "working_dir": "not supported (set WORKDIR in the image)",
    "volumes_from": "not supported (declare a named volume and mount it in both)",
    "extends": "not supported (inline the service)",
    "sysctls": "not supported", "security_opt": "not supported",
    "extra_hosts": "not supported", "read_only": "not supported",
    "tmpfs": "not supported (use a named volume)",
    "group_add": "not supported", "runtime": "not supported", "isolation": "not supported",
    "cgroup_parent": "not supported", "cgroup": "not supported",
    "gpus": "not supported", "storage_opt": "not supported",
    "scale": "not supported (one container per service)",
}
# Keys that may be ignored without changing what the service does (said, not dropped).
_UNSUPPORTED_WARNINGS: dict[str, str] = {
    "container_name": "ignored (containers are named {project}-{service})",
    "hostname": "ignored (the service name is its hostname)",
    "domainname": "ignored",
    "networks": "ignored (services of a project share one network and reach each other "
                "by service name)",
    "links": "ignored (services reach each other by service name)",
    "logging": "ignored (logs are read with caractrl logs)",
    "stop_grace_period": "ignored (the agent's --stop-timeout applies)",
    "stop_signal": "ignored", "tty": "ignored", "stdin_open": "ignored", "init": "ignored",
    "dns": "ignored", "dns_search": "ignored", "dns_opt": "ignored",
    "platform": "ignored", "profiles": "ignored (every service is deployed)",
    "pull_policy": "ignored (images are pulled when missing)",
    "shm_size": "ignored", "ulimits": "ignored", "oom_score_adj": "ignored",
    "oom_kill_disable": "ignored", "mem_swappiness": "ignored", "memswap_limit": "ignored",
    "cpu_shares": "ignored", "cpu_quota": "ignored", "cpu_period": "ignored",
    "cpuset": "ignored", "cpu_count": "ignored", "cpu_percent": "ignored",
    "blkio_config": "ignored", "annotations": "ignored", "develop": "ignored",
    "attach": "ignored", "post_start": "ignored", "pre_stop": "ignored",
    "mac_address": "ignored", "external_links": "ignored",
}
_MAPPED = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose",
    "volumes", "restart", "healthcheck", "depends_on", "deploy", "mem_limit", "cpus",
    "mem_reservation", "pids_limit", "labels",
}
_TOP_LEVEL = {"name", "services", "volumes", "version", "networks", "secrets", "configs",
              "include"}


class ComposeError(Exception):
    """Invalid Compose input that cannot even be converted (reported as one line)."""


def is_compose(doc: Any) -> bool:
    """A top-level ``services`` mapping and no ``apiVersion``."""
    return isinstance(doc, dict) and isinstance(doc.get("services"), dict) and (
        "apiVersion" not in doc
    )


# -- interpolation ----------------------------------------------------------------------------

_VAR_RE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|"
    r"\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>(?:\$\{[^}]*\}|[^}])*))?\}|(?P<bad>))"
)


def interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Compose's variable interpolation, applied to every string of ``value``."""
    if isinstance(value, str):
        return _interpolate_str(value, env, where)
    if isinstance(value, list):
        return [interpolate(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    return value


def _interpolate_str(text: str, env: Mapping[str, str], where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("plain"):
            return env.get(m.group("plain"), "")
        name = m.group("braced")
        if name is None:
            raise ComposeError(f"{where}: invalid interpolation format in {text!r}")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        unset_or_empty = not value
        if op is None:
            return value or ""
        missing = unset_or_empty if op.startswith(":") else value is None
        kind = op[-1]
        if kind == "-":
            return _interpolate_str(arg, env, where) if missing else (value or "")
        if kind == "?":
            if missing:
                raise ComposeError(
                    f"{where}: required variable {name} is missing a value"
                    + (f": {arg}" if arg else "")
                )
            return value or ""
        # "+": the alternative when set
        return "" if missing else _interpolate_str(arg, env, where)

    return _VAR_RE.sub(sub, text)


# -- conversion -------------------------------------------------------------------------------


@dataclass
class Conversion:
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def project_name_of(explicit: str | None, doc: Mapping[str, Any], directory: Path) -> str:
    """-p, else ``name:``, else the directory, normalised as Compose does (lowercase,
    other characters → ``-``) into a DNS label."""
    raw = explicit or (doc.get("name") if isinstance(doc.get("name"), str) else None)
    raw = raw or directory.resolve().name or "default"
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    return name[:63].strip("-") or "default"


def environment_for(directory: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``.env`` next to the Compose file, overridden by the process environment."""
    env: dict[str, str] = {}
    dotenv = directory / ".env"
    if dotenv.is_file():
        env.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    env.update(environ)
    return env


def convert(
    doc: Mapping[str, Any],
    *,
    project_name: str | None,
    directory: Path,
    environ: Mapping[str, str],
) -> Conversion:
    """The Project manifest of a Compose document, with every unmapped key reported."""
    env = environment_for(directory, environ)
    data = interpolate({k: v for k, v in doc.items() if not str(k).startswith("x-")}, env)
    name = project_name_of(project_name, data, directory)
    out = Conversion({"apiVersion": API_VERSION, "kind": "Project",
                      "metadata": {"name": name}, "spec": {}})
    for key in data:
        if key not in _TOP_LEVEL:
            out.warnings.append(f"{key}: unknown top-level key, ignored")
    for key in ("secrets", "configs", "include"):
        if key in data:
            out.errors.append(f"{key}: not supported")
    if data.get("networks"):
        out.warnings.append("networks: ignored (each project has one network)")

    declared: dict[str, dict[str, Any]] = {}
    top_volumes = data.get("volumes") or {}
    if not isinstance(top_volumes, dict):
        out.errors.append("volumes: must be a mapping")
        top_volumes = {}
    for vname, vdef in top_volumes.items():
        vdef = vdef or {}
        where = f'volume "{vname}"'
        if not isinstance(vdef, dict):
            out.errors.append(f"{where}: must be a mapping")
            continue
        if vdef.get("external"):
            out.errors.append(f"{where}: external: not supported (volumes belong to the project)")
        for key in vdef:
            if key not in ("external", "name") and not str(key).startswith("x-"):
                out.warnings.append(f"{where}: {key}: ignored")
        declared[str(vname)] = {"name": _label(str(vname)), "type": "Ephemeral"}
    if declared:
        out.warnings.append(
            "volumes: named volumes are Ephemeral here: their data is removed with the project"
        )

    services: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    for sname, sdef in data["services"].items():
        where = f'service "{sname}"'
        if not isinstance(sdef, dict):
            out.errors.append(f"{where}: must be a mapping")
            continue
        svc = _service(str(sname), sdef, where, directory, env, declared, out)
        for k, v in _labels(sdef.get("labels"), where, out).items():
            if labels.get(k, v) != v:
                out.errors.append(f'{where}: labels: "{k}" differs between services '
                                  "(labels apply to the whole project)")
            labels[k] = v
        services.append(svc)
    out.manifest["spec"]["services"] = services
    if declared:
        out.manifest["spec"]["volumes"] = list(declared.values())
    if labels:
        out.manifest["metadata"]["labels"] = labels
    return out


def _label(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "data"


def _split(value: Any, where: str, out: Conversion) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            out.errors.append(f"{where}: {exc}")
            return None
    if isinstance(value, list):
        return [str(v) for v in value]
    out.errors.append(f"{where}: must be a string or a list")
    return None


def _labels(value: Any, where: str, out: Conversion) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        result = {}
        for item in value:
            k, _, v = str(item).partition("=")
            result[k] = v
        return result
    out.errors.append(f"{where}: labels: must be a mapping or a list")
    return {}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _service(
    name: str,
    sdef: Mapping[str, Any],
    where: str,
    directory: Path,
    env: Mapping[str, str],
    declared: dict[str, dict[str, Any]],
    out: Conversion,
) -> dict[str, Any]:
    svc: dict[str, Any] = {"name": name}
    for key in sdef:
        k = str(key)
        if k.startswith("x-") or k in _MAPPED:
            continue
        if k in _UNSUPPORTED_ERRORS:
            out.errors.append(f"{where}: {k}: {_UNSUPPORTED_ERRORS[k]}")
        elif k in _UNSUPPORTED_WARNINGS:
            out.warnings.append(f"{where}: {k}: {_UNSUPPORTED_WARNINGS[k]}")
        else:
            out.warnings.append(f"{where}: {k}: unknown key, ignored")

    image = sdef.get("image")
    if "build" in sdef:
        if image:
            out.warnings.append(f"{where}: build: ignored (image {image!r} is used)")
        else:
            out.errors.append(f"{where}: build: not supported (build the image and use image:)")
    if image:
        svc["image"] = str(image)
    elif "build" not in sdef:
        out.errors.append(f"{where}: image: required")

    for key, field_name in (("command", "command"), ("entrypoint", "entrypoint")):
        parts = _split(sdef.get(key), f"{where}: {key}", out)
        if parts is not None:
            svc[field_name] = parts

    environment: dict[str, str] = {}
    env_files = sdef.get("env_file")
    env_list = [env_files] if isinstance(env_files, (str, dict)) else _list(
        env_files, f"{where}: env_file", out)
    for item in env_list:
        path, required = (item.get("path"), item.get("required", True)) if isinstance(
            item, dict) else (item, True)
        file = (directory / str(path)).resolve()
        if not file.is_file():
            if required:
                out.errors.append(f"{where}: env_file: {path}: no such file")
            continue
        environment.update({k: v or "" for k, v in dotenv_values(file).items()})
    raw_env = sdef.get("environment")
    if isinstance(raw_env, dict):
        for k, v in raw_env.items():
            if v is None:
                if str(k) in env:
                    environment[str(k)] = env[str(k)]
            else:
                environment[str(k)] = _scalar(v)
    elif isinstance(raw_env, list):
        for item in raw_env:
            k, sep, v = str(item).partition("=")
            if sep:
                environment[k] = v
            elif k in env:  # "VAR" alone: taken from the environment, skipped when unset
                environment[k] = env[k]
    elif raw_env is not None:
        out.errors.append(f"{where}: environment: must be a mapping or a list")
    if environment:
        svc["env"] = [{"name": k, "value": v} for k, v in environment.items()]

    ports = _ports(sdef.get("ports"), where, out)
    for item in _list(sdef.get("expose"), f"{where}: expose", out):
        try:
            text = str(item)
            number, _, proto = text.partition("/")
            ports.append({"containerPort": int(number), **({"protocol": proto} if proto else {})})
        except ValueError:
            out.errors.append(f"{where}: expose: {item!r}: not a port (ranges not supported)")
    if ports:
        svc["ports"] = ports

    mounts = _volumes(sdef.get("volumes"), name, where, declared, out)
    if mounts:
        svc["volumeMounts"] = mounts

    restart = sdef.get("restart")
    if restart is not None:
        text = str(restart) if restart is not False else "no"
        policy, _, retries = text.partition(":")
        if policy not in ("no", "always", "on-failure", "unless-stopped"):
            out.errors.append(f"{where}: restart: {text!r}: must be no, always, on-failure "
                              "or unless-stopped")
        else:
            svc["restart"] = policy
            if retries:
                out.warnings.append(f"{where}: restart: the retry limit {retries} is ignored "
                                    "(restarts back off up to 5 minutes, without limit)")

    health = _healthcheck(sdef.get("healthcheck"), where, out)
    if health is not None:
        svc["healthcheck"] = health

    deps = _depends_on(sdef.get("depends_on"), where, out)
    if deps:
        svc["dependsOn"] = deps

    resources = _resources(sdef, where, out)
    if resources:
        svc["resources"] = resources
    return svc


def _list(value: Any, where: str, out: Conversion) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        out.errors.append(f"{where}: must be a list")
        return []
    return value


def _ports(value: Any, where: str, out: Conversion) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    for item in _list(value, f"{where}: ports", out):
        if isinstance(item, dict):
            if item.get("host_ip") not in (None, "", "0.0.0.0"):
                out.errors.append(f"{where}: ports: host_ip {item['host_ip']}: not supported "
                                  "(published ports listen on every address)")
            if item.get("mode") not in (None, "ingress", "host"):
                out.warnings.append(f"{where}: ports: mode {item['mode']}: ignored")
            try:
                port: dict[str, Any] = {"containerPort": int(item["target"])}
                if item.get("published") not in (None, ""):
                    port["hostPort"] = int(str(item["published"]))
            except (KeyError, ValueError):
                out.errors.append(f"{where}: ports: {item!r}: needs a numeric target "
                                  "(ranges not supported)")
                continue
            if item.get("protocol"):
                port["protocol"] = str(item["protocol"])
            ports.append(port)
            continue
        text = str(item)
        spec, _, proto = text.partition("/")
        parts = spec.rsplit(":", 2)
        try:
            if len(parts) == 3:
                if parts[0] not in ("", "0.0.0.0"):
                    out.errors.append(f"{where}: ports: {text!r}: binding to {parts[0]} is not "
                                      "supported (published ports listen on every address)")
                    continue
                parts = parts[1:]
            port = {"containerPort": int(parts[-1])}
            if len(parts) == 2 and parts[0]:
                port["hostPort"] = int(parts[0])
        except ValueError:
            out.errors.append(f"{where}: ports: {text!r}: not supported (port ranges and "
                              "names are not supported)")
            continue
        if proto:
            port["protocol"] = proto
        ports.append(port)
    return ports


def _volumes(
    value: Any, service: str, where: str, declared: dict[str, dict[str, Any]], out: Conversion
) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for i, item in enumerate(_list(value, f"{where}: volumes", out)):
        if isinstance(item, dict):
            kind, source, target = item.get("type", "volume"), item.get("source"), item.get(
                "target")
            read_only = bool(item.get("read_only"))
        else:
            text = str(item)
            parts = text.split(":")
            kind = "volume"
            if len(parts) == 1:
                source, target = None, parts[0]
            else:
                source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            if source and (source.startswith((".", "/", "~")) or "/" in source):
                kind = "bind"
        if kind == "bind":
            out.errors.append(f"{where}: volumes: bind mount {source}: not supported (use a "
                              "named volume; nodes do not share your files)")
            continue
        if kind != "volume":
            out.errors.append(f"{where}: volumes: type {kind}: not supported")
            continue
        if not target:
            out.errors.append(f"{where}: volumes[{i}]: needs a target path")
            continue
        if source is None:  # anonymous volume: one of the project's, named for the service
            source = f"{service}-{i}"
            declared[source] = {"name": _label(source), "type": "Ephemeral"}
        elif source not in declared:
            out.errors.append(f'{where}: volumes: "{source}" is not declared in the top-level '
                              "volumes")
            continue
        if read_only:
            out.warnings.append(f"{where}: volumes: {source}: read-only is ignored")
        mounts.append({"name": declared[source]["name"], "mountPath": str(target)})
    return mounts


def _healthcheck(value: Any, where: str, out: Conversion) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        out.errors.append(f"{where}: healthcheck: must be a mapping")
        return None
    if value.get("disable"):
        return {"test": ["NONE"]}
    test = value.get("test")
    check: dict[str, Any] = {}
    if isinstance(test, str):
        check["test"] = ["CMD-SHELL", test]
    elif isinstance(test, list):
        check["test"] = [str(t) for t in test]
    else:
        out.errors.append(f"{where}: healthcheck: test: required")
        return None
    for key, target in (("interval", "interval"), ("timeout", "timeout"),
                        ("start_period", "startPeriod"), ("retries", "retries")):
        if key in value:
            check[target] = value[key] if key == "retries" else str(value[key])
    for key in value:
        if key not in ("test", "interval", "timeout", "start_period", "retries", "disable"):
            out.warnings.append(f"{where}: healthcheck: {key}: ignored")
    return check


def _depends_on(value: Any, where: str, out: Conversion) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, list):
        return [{"service": str(s)} for s in value]
    if not isinstance(value, dict):
        out.errors.append(f"{where}: depends_on: must be a list or a mapping")
        return []
    deps = []
    for dep, opts in value.items():
        entry: dict[str, Any] = {"service": str(dep)}
        opts = opts if isinstance(opts, dict) else {}
        if opts.get("condition"):
            entry["condition"] = str(opts["condition"])
        for key in opts:
            if key != "condition":
                out.warnings.append(f"{where}: depends_on: {dep}: {key}: ignored")
        deps.append(entry)
    return deps


def _memory(value: Any, where: str, out: Conversion) -> str | None:
    try:
        # Compose sizes are Docker's: "512m", "1g", "512M" are all binary.
        return format_memory(parse_memory(value.lower() if isinstance(value, str) else value))
    except ValueError as exc:
        out.errors.append(f"{where}: {exc}")
        return None


def _resources(sdef: Mapping[str, Any], where: str, out: Conversion) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    deploy = sdef.get("deploy") or {}
    if not isinstance(deploy, dict):
        out.errors.append(f"{where}: deploy: must be a mapping")
        deploy = {}
    for key in deploy:
        if key == "replicas":
            if deploy[key] not in (None, 1):
                out.errors.append(f"{where}: deploy.replicas: only 1 is supported")
        elif key != "resources":
            out.warnings.append(f"{where}: deploy.{key}: ignored")
    res = deploy.get("resources") or {}
    for part, target in (("limits", limits), ("reservations", requests)):
        block = res.get(part) or {} if isinstance(res, dict) else {}
        if not isinstance(block, dict):
            out.errors.append(f"{where}: deploy.resources.{part}: must be a mapping")
            continue
        for key, value in block.items():
            if key == "memory":
                if (m := _memory(value, f"{where}: deploy.resources.{part}.memory", out)):
                    target["memory"] = m
            elif key == "cpus":
                target["cpus"] = _cpus(value, f"{where}: deploy.resources.{part}.cpus", out)
            elif key == "pids" and part == "limits":
                target["pids"] = _int(value, f"{where}: deploy.resources.limits.pids", out)
            else:
                out.warnings.append(f"{where}: deploy.resources.{part}.{key}: ignored")
    for key, target, field_name in (("mem_limit", limits, "memory"),
                                    ("mem_reservation", requests, "memory")):
        if key in sdef and (m := _memory(sdef[key], f"{where}: {key}", out)):
            target.setdefault(field_name, m)
    if "cpus" in sdef:
        limits.setdefault("cpus", _cpus(sdef["cpus"], f"{where}: cpus", out))
    if "pids_limit" in sdef:
        limits.setdefault("pids", _int(sdef["pids_limit"], f"{where}: pids_limit", out))
    result: dict[str, Any] = {}
    if limits := {k: v for k, v in limits.items() if v is not None}:
        result["limits"] = limits
    if requests := {k: v for k, v in requests.items() if v is not None}:
        result["requests"] = requests
    return result


def _int(value: Any, where: str, out: Conversion) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        out.errors.append(f"{where}: must be a whole number")
        return None


def _cpus(value: Any, where: str, out: Conversion) -> float | None:
    try:
        return parse_cpus(str(value) if not isinstance(value, (int, float)) else value)
    except ValueError as exc:
        out.errors.append(f"{where}: {exc}")
        return None


def expand_compose(
    documents: list[Any], project_name: str | None, environ: Mapping[str, str]
) -> tuple[list[Any], list[str]]:
    """Replace every Compose document by its Project; returns the documents and the
    warnings (``compose.yaml: service "web": ...``). Raises ManifestError listing every
    error of every Compose document."""
    from cli.manifests import Document, ManifestError  # manifests does not import us

    result: list[Any] = []
    warnings: list[str] = []
    errors: list[str] = []
    for doc in documents:
        assert isinstance(doc, Document)
        if not is_compose(doc.data):
            result.append(doc)
            continue
        directory = Path.cwd() if doc.source == "<stdin>" else Path(doc.source).parent
        try:
            conv = convert(doc.data, project_name=project_name, directory=directory,
                           environ=environ)
        except ComposeError as exc:
            errors.append(f"{doc.source}: {exc}")
            continue
        warnings += [f"{doc.source}: {w}" for w in conv.warnings]
        errors += [f"{doc.source}: {e}" for e in conv.errors]
        result.append(Document(doc.source, doc.index, conv.manifest))
    if errors:
        count = len(errors)
        raise ManifestError(
            f"unsupported Compose file: {count} error{'s' if count != 1 else ''}; "
            "nothing was applied", errors,
        )
    return result, warnings
