"""secaudit: a security audit in steps, with an expert audit of the files at the end."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from exai.tools.workflow import StepArgs, WorkflowTool


class SecAuditArgs(StepArgs):
    audit_focus: Literal["owasp", "compliance", "infrastructure", "dependencies", "comprehensive"] = Field(
        "comprehensive", description="What the audit covers."
    )
    threat_level: Literal["low", "medium", "high", "critical"] = Field(
        "medium", description="How exposed the code is (internal tool .. internet-facing with sensitive data)."
    )


class SecAudit(WorkflowTool[SecAuditArgs]):
    name = "secaudit"
    description = (
        "Security audit in steps: each call records what you audited and the vulnerabilities found "
        "(issues_found), with no model call; the final step (next_step_required: false, relevant_files "
        "required) gets an expert audit."
    )
    Args = SecAuditArgs
    work = "security_audit"
    system = (
        "You are an application security engineer. Find exploitable weaknesses, not theoretical ones: "
        "for each, name the attack, the vulnerable file:line, who can reach it and what they gain, rate "
        "it against the stated threat level, and give the concrete fix. Cover authentication and "
        "authorisation, input validation and injection, secrets and cryptography, data exposure, "
        "dependencies and configuration as the audit focus asks."
    )
    final_requires = ("relevant_files",)
    actions = (
        (
            "Map the attack surface: entry points, trust boundaries, who can call what.",
            "Find where authentication, authorisation and secrets are handled; list those files in relevant_files.",
        ),
        (
            "Follow untrusted input from each entry point to where it is used (queries, paths, commands, templates).",
            "Check cryptography, session handling, error messages and logging for leaks; record each weakness in issues_found.",
        ),
        (
            "Confirm each recorded weakness is reachable; drop the ones that are not, and rate the rest.",
            "Check dependencies and configuration for known-vulnerable versions and unsafe defaults, then make the final step.",
        ),
    )
