"""The least-privilege Kafka ACLs of MotionGuard's three principals, defined once.

``motionguard kafka acls`` prints them (as a table or as ``kafka-acls`` commands
for an operator's own cluster), ``motionguard kafka start --secure`` applies them
to the local broker through the admin API, and docs/kafka-security.md shows the
table.  Everything not granted here is refused by a broker whose authorizer has
``allow.everyone.if.no.acl.found=false``.

* **worker** - reads uploads and moderator labels, writes verdicts (and reads
  them back for the label join) and dead letters, uses its consumer groups (the
  app id for the Faust app, ``<app id>-uploads`` for the uploads), and owns the topics whose
  names start with ``<app id>-`` (Faust's table changelogs and its
  ``<app id>-__assignor-__leader`` topic), which it creates itself.
* **submitter** - writes uploads, nothing else.
* **moderation** - writes moderator labels; reads verdicts and dead letters
  (``motionguard verdicts`` and ``verdicts --dead-letters``, without a group).

The four main topics are created by the operator (or ``kafka start --secure``);
the worker then runs with ``MOTIONGUARD_CREATE_TOPICS`` on or off alike, since it
only creates a topic it cannot see.  Idempotent producers (kafka-python's
default) need no cluster permission on Kafka 3.x: ``Write`` on a topic is enough.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from streamer.schemas import Topics
from streamer.settings import uploads_group

__all__ = ["AclRule", "Principals", "acl_table", "kafka_acls_commands", "least_privilege_acls"]


@dataclass(frozen=True)
class Principals:
    """Kafka principals (``User:<name>``): a SCRAM user name, or a client certificate's CN."""

    worker: str = "User:worker"
    submitter: str = "User:submitter"
    moderation: str = "User:moderation"


@dataclass(frozen=True)
class AclRule:
    """``principal`` may do ``operations`` on a resource (ALLOW, from any host).

    ``resource_type`` is ``TOPIC`` or ``GROUP``; ``pattern_type`` is ``LITERAL``
    (exactly ``resource_name``) or ``PREFIXED`` (every name starting with it).
    Operation names are Kafka's (``READ``, ``WRITE``, ``CREATE``, ``DESCRIBE``...).
    """

    principal: str
    resource_type: str
    pattern_type: str
    resource_name: str
    operations: tuple[str, ...]
    purpose: str


def least_privilege_acls(app_id: str, topics: Topics, principals: Principals | None = None) -> list[AclRule]:
    """Every ACL the worker (consumer groups ``app_id`` and ``<app_id>-uploads``), the submitter and the moderation
    side need."""
    if not app_id:
        raise ValueError("app_id must not be empty")
    p = principals or Principals()
    internal = f"{app_id}-"
    for name in topics.all():
        if name.startswith(internal):
            raise ValueError(
                f"topic {name!r} starts with {internal!r}, the prefix of the worker's own topics: the worker "
                "could then write it; give the app id and the topics distinct names"
            )
    read = ("READ", "DESCRIBE")
    write = ("WRITE", "DESCRIBE")
    return [
        AclRule(p.worker, "TOPIC", "LITERAL", topics.uploads, read, "consume upload events"),
        AclRule(p.worker, "TOPIC", "LITERAL", topics.labels, read, "consume moderator labels"),
        AclRule(
            p.worker,
            "TOPIC",
            "LITERAL",
            topics.verdicts,
            ("READ", "WRITE", "DESCRIBE"),
            "produce verdicts, read them back for the label join",
        ),
        AclRule(p.worker, "TOPIC", "LITERAL", topics.dead_letters, write, "produce dead letters"),
        AclRule(
            p.worker,
            "TOPIC",
            "PREFIXED",
            internal,
            ("CREATE", "READ", "WRITE", "DESCRIBE"),
            "its table changelogs and leader topic",
        ),
        AclRule(p.worker, "GROUP", "LITERAL", app_id, read, "its Faust app's consumer group (label join)"),
        AclRule(p.worker, "GROUP", "LITERAL", uploads_group(app_id), read, "its uploads consumer group (commits)"),
        AclRule(p.submitter, "TOPIC", "LITERAL", topics.uploads, write, "publish upload events"),
        AclRule(p.moderation, "TOPIC", "LITERAL", topics.labels, write, "publish moderator labels"),
        AclRule(p.moderation, "TOPIC", "LITERAL", topics.verdicts, read, "read verdicts"),
        AclRule(p.moderation, "TOPIC", "LITERAL", topics.dead_letters, read, "read dead letters"),
    ]


def acl_table(rules: list[AclRule]) -> str:
    """A Markdown table of ``rules`` (as in docs/kafka-security.md)."""
    lines = [
        "| Principal | Resource | Pattern | Name | Operations | For |",
        "|---|---|---|---|---|---|",
    ]
    for rule in rules:
        lines.append(
            f"| `{rule.principal}` | {rule.resource_type} | {rule.pattern_type} | `{rule.resource_name}` | "
            f"{', '.join(rule.operations)} | {rule.purpose} |"
        )
    return "\n".join(lines)


_CLI_RESOURCE = {"TOPIC": "--topic", "GROUP": "--group"}


def kafka_acls_commands(rules: list[AclRule], bootstrap: str, command_config: str) -> list[str]:
    """``kafka-acls.sh --add`` command lines that create ``rules`` on a cluster (one per rule)."""
    commands = []
    for rule in rules:
        args = [
            "kafka-acls.sh",
            "--bootstrap-server",
            bootstrap,
            "--command-config",
            command_config,
            "--add",
            "--allow-principal",
            rule.principal,
        ]
        for operation in rule.operations:
            args += ["--operation", operation.title().replace("_", "")]
        args += [_CLI_RESOURCE[rule.resource_type], rule.resource_name, "--resource-pattern-type", rule.pattern_type]
        commands.append(shlex.join(args))
    return commands
