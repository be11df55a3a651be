"""`make audit`: known vulnerabilities in the locked dependencies, with pip-audit.

Exports uv.lock (every extra and the dev group) as pinned requirements and asks pip-audit about
each pin (PyPI's advisory data). Exit status:
  0  every pin was audited and none has a known vulnerability (or only ignored ones, below);
  1  a known vulnerability: upgrade it in the lock (`uv lock --upgrade-package NAME`), or, when
     no fixed version exists, add its id to IGNORED with the reason;
  2  some pins could not be audited (the advisory service did not answer for them) and
     METER_AUDIT_REQUIRED=1; without it, this is a loud warning and exit 0, so that a machine
     without the advisory service still runs the rest of CI.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

# Vulnerability id → why it is accepted for now. Keep each with a reason and a date.
IGNORED: dict[str, str] = {}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        req, report = Path(tmp) / "requirements.txt", Path(tmp) / "audit.json"
        uv = shlex.split(os.environ.get("UV", "uv"))
        export = ["export", "--frozen", "--all-extras", "--format", "requirements-txt"]
        subprocess.run(
            [*uv, *export, "--no-hashes", "--no-emit-project", "--output-file", str(req)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        ignores = [arg for vuln in IGNORED for arg in ("--ignore-vuln", vuln)]
        audit = [sys.executable, "-m", "pip_audit", "-r", str(req), "--disable-pip", "--no-deps"]
        done = subprocess.run(
            [*audit, "--progress-spinner", "off", "-f", "json", "-o", str(report), *ignores],
            check=False,
        )
        if not report.exists():
            print("audit: pip-audit produced no report", file=sys.stderr)
            return 2
        deps = json.loads(report.read_text())["dependencies"]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if "skip_reason" in d]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    audited = len(deps) - len(skipped)
    print(f"audit: {audited} of {len(deps)} locked packages audited, {len(vulnerable)} vulnerable")
    if vulnerable or done.returncode not in (0, 1):
        return 1
    if skipped:
        names = ", ".join(sorted(d["name"] for d in skipped))
        print(f"audit: NOT AUDITED (no advisory data reached): {names}", file=sys.stderr)
        if os.environ.get("METER_AUDIT_REQUIRED") == "1":
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
