#!/usr/bin/env python3
"""Checks magicmx's status page in Debian's headless Chromium.

Usage:
    check_status_page.py URL SCREENSHOT_PATH EXPECTATIONS_JSON

URL is the page (the node's admin API serves it at `/`; it polls `status`
relative to itself). EXPECTATIONS_JSON is a JSON object (or @FILE holding
one); every key is optional:

    node               #node-name's text equals this
    accepted_min       #counter-accepted >= this      (likewise tempfailed_min,
    refused_min        #counter-refused >= this        rejected_min, delivered_min,
                                                       deferred_min, bounced_min;
                                                       refused = refused at connect)
    top_block          a #top-blocks row has this data-block (string or list)
    penalised_block    a #penalised row has this data-block (string or list)
    peer               a #peers row has this data-peer (string or list; null: no check)
    chart_points_min   at least this many .point-accepted and .point-refused
                       elements, and each kind's largest data-value > 0

Whatever the expectations, the body must carry data-loaded="1".

Chromium runs twice (--dump-dom, then --screenshot at 1280x1600), each with a
fresh profile, --virtual-time-budget so the page's polls run, and a hard
timeout (CHECK_STATUS_TIMEOUT seconds, default 60; the whole process group is
killed on expiry).

Exit codes: 0 all checks passed; 1 a check failed; 2 Chromium is missing;
3 Chromium failed or timed out; 64 bad usage or expectations.
Environment: CHROMIUM (binary, default /usr/bin/chromium), CHECK_STATUS_TIMEOUT,
CHECK_STATUS_BUDGET_MS (virtual time budget, default 8000).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--no-pings",
    "--mute-audio",
    "--hide-scrollbars",
    "--password-store=basic",
    "--use-mock-keychain",
    "--disable-dev-shm-usage",
    "--lang=en-US",
]

COUNTERS = ["accepted", "tempfailed", "rejected", "refused", "delivered", "deferred", "bounced"]
KNOWN = {"node", "top_block", "penalised_block", "peer", "chart_points_min"} | {c + "_min" for c in COUNTERS}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class UsageError(Exception):
    pass


class ChromiumError(Exception):
    pass


# ---------------------------------------------------------------- DOM


class Node:
    __slots__ = ("tag", "attrs", "children", "parent")

    def __init__(self, tag, attrs, parent):
        self.tag = tag
        self.attrs = attrs
        self.children = []
        self.parent = parent

    def text(self):
        out = []

        def walk(n):
            for c in n.children:
                if isinstance(c, str):
                    out.append(c)
                else:
                    walk(c)

        walk(self)
        return " ".join("".join(out).split())

    def iter(self):
        for c in self.children:
            if not isinstance(c, str):
                yield c
                yield from c.iter()

    def classes(self):
        return (self.attrs.get("class") or "").split()


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse_dom(html):
    b = TreeBuilder()
    b.feed(html)
    b.close()
    return b.root


# ---------------------------------------------------------------- Chromium


def find_chromium():
    c = os.environ.get("CHROMIUM")
    if c:
        return c if (os.path.isfile(c) and os.access(c, os.X_OK)) else None
    if os.path.isfile("/usr/bin/chromium") and os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def run_chromium(binary, extra, url, timeout):
    profile = tempfile.mkdtemp(prefix="magicmx-chromium-")
    cmd = [binary] + FLAGS + ["--user-data-dir=" + profile] + extra + [url]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        raise ChromiumError("chromium did not finish within %d s: %s" % (timeout, " ".join(cmd)))
    finally:
        kill_group(proc)  # any helper left behind in its session
        shutil.rmtree(profile, ignore_errors=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        tail = "\n".join(err.decode("utf-8", "replace").strip().splitlines()[-15:])
        raise ChromiumError("chromium exited with %s:\n%s" % (proc.returncode, tail))
    return out.decode("utf-8", "replace"), elapsed


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- checks


def as_list(v):
    return v if isinstance(v, list) else [v]


def number(node):
    """An element's number: its data-value, else the digits of its text."""
    if node is None:
        return None
    raw = node.attrs.get("data-value")
    if raw is None or raw == "":
        raw = "".join(ch for ch in node.text() if ch.isdigit() or ch in ".-")
    try:
        return float(raw)
    except ValueError:
        return None


def check(dom, exp):
    by_id = {}
    body = None
    for n in dom.iter():
        if "id" in n.attrs and n.attrs["id"] not in by_id:
            by_id[n.attrs["id"]] = n
        if n.tag == "body" and body is None:
            body = n
    results = []

    def record(name, ok, detail):
        results.append((name, bool(ok), detail))

    loaded = body.attrs.get("data-loaded") if body is not None else None
    banner = by_id.get("banner")
    banner_text = banner.text() if banner is not None and "show" in banner.classes() else ""
    record(
        'body[data-loaded="1"]',
        loaded == "1",
        "data-loaded=%r%s" % (loaded, ("; banner: " + banner_text) if banner_text else ""),
    )

    if "node" in exp:
        got = by_id["node-name"].text() if "node-name" in by_id else None
        record("#node-name == %r" % exp["node"], got == exp["node"], "found %r" % got)

    for c in COUNTERS:
        key = c + "_min"
        if key in exp:
            got = number(by_id.get("counter-" + c))
            record(
                "#counter-%s >= %s" % (c, exp[key]),
                got is not None and got >= exp[key],
                "found %s" % ("no element or no number" if got is None else "%g" % got),
            )

    def rows(table_id, attr):
        t = by_id.get(table_id)
        if t is None:
            return None
        return [n.attrs[attr] for n in t.iter() if n.tag == "tr" and attr in n.attrs]

    for key, table, attr in (
        ("top_block", "top-blocks", "data-block"),
        ("penalised_block", "penalised", "data-block"),
        ("peer", "peers", "data-peer"),
    ):
        if key in exp and exp[key] is not None:
            found = rows(table, attr)
            for want in as_list(exp[key]):
                record(
                    "#%s has a row %s=%r" % (table, attr, want),
                    found is not None and want in found,
                    "no #%s table" % table if found is None else "rows: %s" % (found or "none"),
                )

    if "chart_points_min" in exp and exp["chart_points_min"] is not None:
        chart = by_id.get("chart-traffic")
        want = exp["chart_points_min"]
        for kind in ("accepted", "refused"):
            pts = [] if chart is None else [n for n in chart.iter() if "point-" + kind in n.classes()]
            values = []
            for p in pts:
                try:
                    values.append(float(p.attrs.get("data-value", "")))
                except ValueError:
                    pass
            has_t = all("data-t" in p.attrs for p in pts)
            top = max(values) if values else None
            record(
                "#chart-traffic has >= %s .point-%s, max data-value > 0" % (want, kind),
                chart is not None and len(pts) >= want and has_t and len(values) == len(pts) and top is not None
                and top > 0,
                "no #chart-traffic" if chart is None else "%d points, max data-value %s%s"
                % (len(pts), "none" if top is None else "%g" % top, "" if has_t else ", some without data-t"),
            )
    return results


def load_expectations(arg):
    text = arg
    if arg.startswith("@"):
        with open(arg[1:], encoding="utf-8") as f:
            text = f.read()
    try:
        exp = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError("EXPECTATIONS_JSON is not JSON: %s" % e)
    if not isinstance(exp, dict):
        raise UsageError("EXPECTATIONS_JSON must be a JSON object")
    unknown = sorted(set(exp) - KNOWN)
    if unknown:
        raise UsageError("unknown expectation(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(KNOWN))))
    for k, v in exp.items():
        if k.endswith("_min") and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise UsageError("%s must be a number" % k)
        if k in ("node",) and not isinstance(v, str):
            raise UsageError("%s must be a string" % k)
        if k in ("top_block", "penalised_block", "peer") and v is not None:
            if not all(isinstance(x, str) for x in as_list(v)):
                raise UsageError("%s must be a string, a list of strings or null" % k)
    return exp


def main(argv):
    if len(argv) != 4 or argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 64
    url, shot, exp_arg = argv[1], argv[2], argv[3]
    try:
        exp = load_expectations(exp_arg)
    except (UsageError, OSError) as e:
        print("check_status_page: %s" % e, file=sys.stderr)
        return 64

    binary = find_chromium()
    if binary is None:
        print(
            "check_status_page: chromium not found (%s); install it with: "
            "apt-get install chromium" % (os.environ.get("CHROMIUM") or "/usr/bin/chromium"),
            file=sys.stderr,
        )
        return 2
    timeout = int(os.environ.get("CHECK_STATUS_TIMEOUT", "60"))
    budget = int(os.environ.get("CHECK_STATUS_BUDGET_MS", "8000"))
    common = ["--virtual-time-budget=%d" % budget, "--run-all-compositor-stages-before-draw"]

    started = time.monotonic()
    try:
        dom_html, t_dom = run_chromium(binary, common + ["--window-size=1280,1600", "--dump-dom"], url, timeout)
        shot_dir = os.path.dirname(os.path.abspath(shot))
        os.makedirs(shot_dir, exist_ok=True)
        if os.path.exists(shot):
            os.remove(shot)
        _, t_shot = run_chromium(
            binary, common + ["--window-size=1280,1600", "--screenshot=" + os.path.abspath(shot)], url, timeout
        )
    except ChromiumError as e:
        print("check_status_page: %s" % e, file=sys.stderr)
        return 3

    print("check_status_page: %s (%s)" % (url, binary))
    print("  dom dumped in %.1f s (%d bytes), screenshot in %.1f s" % (t_dom, len(dom_html), t_shot))
    results = check(parse_dom(dom_html), exp)
    try:
        with open(shot, "rb") as f:
            head = f.read(8)
        size = os.path.getsize(shot)
        ok = head == b"\x89PNG\r\n\x1a\n" and size > 1000
        results.append(("screenshot %s" % shot, ok, "%d bytes%s" % (size, "" if ok else ", not a PNG")))
    except OSError as e:
        results.append(("screenshot %s" % shot, False, str(e)))

    failed = [r for r in results if not r[1]]
    for name, ok, detail in results:
        print("  %s %s: %s" % ("ok  " if ok else "FAIL", name, detail))
    total = time.monotonic() - started
    if failed:
        print(
            "check_status_page: FAILED %d of %d checks in %.1f s: %s"
            % (len(failed), len(results), total, "; ".join("%s (%s)" % (n, d) for n, _, d in failed)),
            file=sys.stderr,
        )
        return 1
    print("check_status_page: all %d checks OK in %.1f s" % (len(results), total))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
