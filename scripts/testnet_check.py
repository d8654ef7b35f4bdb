#!/usr/bin/env python3
"""Checks a running testnet (scripts/testnet.sh check): asks every reachable
node's HTTP API the questions in testnet/questions.toml with model "auto" and
verifies that

  * every node lists every capability of every node that is up, and none of a
    node that is down (stopped, killed or cut off from the network);
  * each question is answered by a node that owns the expected capability,
    through that capability's backend (the echo backends name themselves);
    a question marked `image = true` is sent with an image, which only a
    capability taking images may answer;
  * a question whose capability is offered by no node that is up gets a clear
    OpenAI-style error, or an answer from another capability that is up;
  * a question with no capability (nothing in the testnet fits it) is refused
    with a 404 `no_capability_fits` by every node;
  * every shared MCP tool a node's config names (`[mcp.tools.<name>]` of an
    `[[mcp]]` whose share is not "local") is listed by every node as the
    capability `tool/<name>` while its node is up, and from every node it
    takes a photo (an MCP image, PNG) when called by `<name>@<node>` and when
    asked for by meaning; while its node is down, calling it by name is a
    clear 404 (`node_not_found` once the node is forgotten, `tool_not_found`);
  * every agent a node's config names (`[[agent]]`) answers from every node
    when invoked by name (`/v1/agent/invoke`): after calling a camera on a
    node that is up (a PNG in its steps) while one is, without a tool call
    while none is; while its node is down, a clear 404;
  * a capability offered by several nodes that are up has its requests spread
    over them: SPREAD_REQUESTS requests naming it, SPREAD_CLIENTS at a time,
    from a node that does not offer it; the count per provider is printed,
    and a provider that got none is a problem.

Which nodes are up is read from Docker, not assumed. With --wait it retries
until everything holds or the time runs out, and prints how long that took.
Exit status: 0 when everything holds, 1 otherwise (with what does not).
Standard library only.
"""

import argparse
import base64
import json
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

REQUEST_TIMEOUT = 15
# A PNG's first bytes, as a data: URL: what a question with `image = true` carries.
TINY_PNG = "data:image/png;base64,iVBORw0KGgo="
SPREAD_REQUESTS = 40
SPREAD_CLIENTS = 4


def docker(*args):
    out = subprocess.run(["docker", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


class Node:
    """A node container of the testnet."""

    def __init__(self, service, container, name, ip, capabilities, tools, agents):
        self.service = service
        self.container = container
        self.name = name  # node name peers see (config, or the host name)
        self.ip = ip  # on the testnet network; None when cut off or stopped
        self.capabilities = capabilities  # capability id -> backend names
        self.tools = tools  # names of the MCP tools it shares with the mesh
        self.agents = agents  # capability ids of its agents

    @property
    def up(self):
        return self.ip is not None

    def url(self, path):
        return f"http://{self.ip}:8000{path}"


def discover(project, testnet_dir):
    """Every node container of the project, running or not, with its state."""
    network = f"{project}_mesh"
    ids = docker("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
    nodes = []
    for info in json.loads(docker("inspect", *ids)) if ids else []:
        service = info["Config"]["Labels"].get("com.docker.compose.service", "")
        config_path = testnet_dir / f"{service}.toml"
        if not config_path.is_file():
            continue  # a backend
        config = tomllib.loads(config_path.read_text())
        name = config.get("node", {}).get("name") or info["Config"]["Hostname"]
        # capability id -> its backends (one name, or a list of names)
        caps = {c["id"]: c["backend"] if isinstance(c["backend"], list) else [c["backend"]]
                for c in config.get("capability", [])}
        agents = sorted(a["id"] if "/" in a["id"] else f"agent/{a['id']}" for a in config.get("agent", []))
        caps.update({a: [] for a in agents})
        tools = sorted(t for m in config.get("mcp", []) if m.get("share", "local") != "local"
                       for t in m.get("tools", {}))
        ip = None
        if info["State"]["Running"]:
            net = info["NetworkSettings"]["Networks"].get(network)
            ip = (net or {}).get("IPAddress") or None
        nodes.append(Node(service, info["Name"].lstrip("/"), name, ip, caps, tools, agents))
    return sorted(nodes, key=lambda n: n.container)


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post(url, body):
    """POST a JSON body: the status, the headers (lower-case names) and the
    JSON answer. Raises OSError or ValueError (not JSON)."""
    status, headers, raw = http("POST", url, body)
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)


def check_once(nodes, questions):
    """Everything wrong right now, as readable lines (empty: all holds), the
    questions and tool calls answered as expected, and whether every node's
    list agreed with Docker."""
    problems = []
    up = [n for n in nodes if n.up]
    down = [n for n in nodes if not n.up]
    expected = {(cap, n.name) for n in up for cap in n.capabilities}
    expected |= {(f"tool/{tool}", n.name) for n in up for tool in n.tools}
    owners = {}  # capability -> {name of an up node offering it: its backends}
    for n in up:
        for cap, backend in n.capabilities.items():
            owners.setdefault(cap, {})[n.name] = backend
    down_names = {n.name for n in down}
    answers = 0
    peer_names = {}  # PeerId -> node name, from the capability lists
    # Lists first: while they disagree with Docker, questions would only wait
    # on nodes that are gone, and the time to converge would be overstated.
    for n in up:
        try:
            status, _, body = http("GET", n.url("/v1/mesh/capabilities"))
            listed = json.loads(body)["data"] if status == 200 else None
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{n.service}: capability list failed: {e}")
            continue
        if listed is None:
            problems.append(f"{n.service}: capability list answered {status}")
            continue
        seen = {(c["id"], c.get("node_name")) for c in listed}
        peer_names.update({c["node"]: c.get("node_name") for c in listed})
        # An origin whose name is not known yet lists as None: sorted as "".
        by_name = lambda pair: (pair[0], pair[1] or "")
        for cap, owner in sorted(expected - seen, key=by_name):
            problems.append(f"{n.service}: does not list {cap} of {owner}")
        for cap, owner in sorted(seen, key=by_name):
            if owner in down_names:
                problems.append(f"{n.service}: still lists {cap} of {owner}, which is down")
    if problems:
        return problems, (answers, 0), False
    problems, tool_calls = check_tools(nodes, peer_names)
    agent_problems, agent_runs = check_agents(nodes, peer_names)
    problems += agent_problems
    tool_calls += agent_runs
    for n in up:
        for q in questions:
            cap = q.get("capability")
            content = q["text"]
            if q.get("image"):
                content = [{"type": "text", "text": q["text"]},
                           {"type": "image_url", "image_url": {"url": TINY_PNG}}]
            body = {"model": "auto", "messages": [{"role": "user", "content": content}]}
            try:
                status, headers, reply = post(n.url("/v1/chat/completions"), body)
            except (OSError, ValueError) as e:
                problems.append(f"{n.service}: {q['text']!r}: {e}")
                continue
            route = headers.get("x-atmosphere-route")
            answered_by = peer_names.get(headers.get("x-atmosphere-node"), headers.get("x-atmosphere-node"))
            if cap is None:
                # Nothing in the testnet fits it: every node must refuse it.
                err = reply.get("error") if isinstance(reply, dict) else None
                code = err.get("code") if isinstance(err, dict) else None
                if status != 404 or code != "no_capability_fits":
                    problems.append(f"{n.service}: {q['text']!r}: expected a 404 no_capability_fits, got "
                                    f"{status} (route {route} on {answered_by})")
                else:
                    answers += 1
            elif cap in owners:
                content = reply.get("choices", [{}])[0].get("message", {}).get("content", "") if status == 200 else ""
                backend = content[1:].split("]", 1)[0] if content.startswith("[") else None
                if status != 200:
                    problems.append(f"{n.service}: {q['text']!r}: {status} {reply.get('error', {}).get('message')}")
                elif route != cap or backend not in owners[cap].get(answered_by, []):
                    problems.append(f"{n.service}: {q['text']!r}: answered by {route} on {answered_by} "
                                    f"(backend {backend}), expected {cap}")
                else:
                    answers += 1
            elif status == 200:
                # Nobody offers it now: another capability that is up may answer.
                if route not in owners or answered_by in down_names:
                    problems.append(f"{n.service}: {q['text']!r}: answered by {route} on {answered_by}, "
                                    f"which is not up")
                else:
                    answers += 1
            else:
                err = reply.get("error") if isinstance(reply, dict) else None
                if not (isinstance(err, dict) and err.get("message")):
                    problems.append(f"{n.service}: {q['text']!r}: {status} without an OpenAI error body")
                else:
                    answers += 1
    return problems, (answers, tool_calls), True


def photo_problem(status, reply, taken_on, peer_names):
    """What is wrong with a tool call's answer that should be a photo taken
    on the node named `taken_on` (None: any), or None."""
    if status != 200:
        err = reply.get("error", {}) if isinstance(reply, dict) else {}
        return f"{status} {err.get('code')}: {err.get('message')}"
    content = (reply.get("result") or {}).get("content") or [{}]
    image = content[0]
    if image.get("type") != "image" or image.get("mimeType") != "image/png":
        return f"no PNG image in the result: {str(reply)[:120]}"
    if not base64.b64decode(image.get("data", "")).startswith(b"\x89PNG\r\n\x1a\n"):
        return "the image is not a PNG"
    node = peer_names.get(reply.get("node"), reply.get("node"))
    if taken_on is not None and node != taken_on:
        return f"taken on {node}, expected {taken_on}"
    return None


def check_tools(nodes, peer_names):
    """The shared tools of the testnet's configs, called from every up node:
    (problems, calls as expected)."""
    problems, calls = [], 0
    up = [n for n in nodes if n.up]
    for owner in nodes:
        for tool in owner.tools:
            for n in up:
                body = {"tool": f"{tool}@{owner.name}", "arguments": {"resolution": "low"}}
                try:
                    status, _, reply = post(n.url("/v1/tool/execute"), body)
                except (OSError, ValueError) as e:
                    problems.append(f"{n.service}: {tool}@{owner.name}: {e}")
                    continue
                if owner.up:
                    wrong = photo_problem(status, reply, owner.name, peer_names)
                    if wrong is None and reply.get("capability") != f"tool/{tool}":
                        wrong = f"answered by {reply.get('capability')}"
                else:
                    code = (reply.get("error") or {}).get("code") if isinstance(reply, dict) else None
                    wrong = None if status == 404 and code in ("tool_not_found", "node_not_found") else \
                        f"{owner.name} is down, yet the call answered {status} {code}"
                if wrong:
                    problems.append(f"{n.service}: {tool}@{owner.name}: {wrong}")
                else:
                    calls += 1
    # By meaning: "take a photo" reaches a camera wherever one is up.
    if any(o.up and o.tools for o in nodes):
        for n in up:
            body = {"query": "take a photo of whoever is at the front gate", "arguments": {}}
            try:
                status, _, reply = post(n.url("/v1/tool/execute"), body)
                wrong = photo_problem(status, reply, None, peer_names)
            except (OSError, ValueError) as e:
                wrong = str(e)
            if wrong:
                problems.append(f"{n.service}: a photo by meaning: {wrong}")
            else:
                calls += 1
    return problems, calls


AGENT_QUERY = "Who is at the front gate right now?"


def check_agents(nodes, peer_names):
    """Each agent of the testnet's configs, invoked by name from every up
    node: while its node and a node with cameras are up, it answers after
    calling a camera there (a PNG); with no camera up, it answers without a
    tool; while its node is down, invoking it is a clear 404.
    (problems, runs as expected)"""
    problems, runs = [], 0
    up = [n for n in nodes if n.up]
    cameras = {n.name for n in up if n.tools}
    for owner in nodes:
        for agent in owner.agents:
            for n in up:
                body = {"query": AGENT_QUERY, "agent": f"{agent}@{owner.name}"}
                try:
                    status, _, reply = post(n.url("/v1/agent/invoke"), body)
                except (OSError, ValueError) as e:
                    problems.append(f"{n.service}: agent {agent}: {e}")
                    continue
                err = (reply.get("error") or {}) if isinstance(reply, dict) else {}
                if not owner.up:
                    wrong = None if status == 404 and err.get("code") in ("model_not_found", "node_not_found") \
                        else f"{owner.name} is down, yet invoking it answered {status} {err.get('code')}"
                elif status != 200:
                    wrong = f"{status} {err.get('code')}: {err.get('message')}"
                else:
                    calls = [s for s in reply.get("steps", []) if s.get("type") == "tool"]
                    answer = reply.get("answer") or ""
                    if peer_names.get(reply.get("node"), reply.get("node")) != owner.name:
                        wrong = f"run on {reply.get('node')}, not on {owner.name}"
                    elif not cameras:
                        wrong = None if not calls else f"no camera is up, yet it called {calls[0].get('tool')}"
                    elif not calls:
                        wrong = f"it called no tool (offered: {reply.get('tools')}); it answered {answer[:80]!r}"
                    else:
                        step = calls[0]
                        wrong = photo_problem(200, step, None, peer_names)
                        taken_on = peer_names.get(step.get("node"), step.get("node"))
                        if wrong is None and taken_on not in cameras:
                            wrong = f"its camera call ran on {taken_on}"
                        if wrong is None and "the tools said" not in answer:
                            wrong = f"its answer does not use the tool's result: {answer[:80]!r}"
                if wrong:
                    problems.append(f"{n.service}: agent {agent}@{owner.name}: {wrong}")
                else:
                    runs += 1
    return problems, runs


def spread(nodes):
    """How requests naming a capability that several up nodes offer were
    spread over them: (report lines, problems)."""
    from concurrent.futures import ThreadPoolExecutor

    up = [n for n in nodes if n.up]
    owners = {}
    for n in up:
        for cap in n.capabilities:
            owners.setdefault(cap, []).append(n.name)
    lines, problems = [], []
    for cap, names in sorted(owners.items()):
        if len(names) < 2:
            continue
        sender = next((n for n in up if cap not in n.capabilities), up[0])
        peer_names = {}
        status, _, body = http("GET", sender.url("/v1/mesh/capabilities"))
        if status == 200:
            peer_names = {c["node"]: c.get("node_name") for c in json.loads(body)["data"]}

        def one(_):
            body = {"model": cap, "messages": [{"role": "user", "content": "Plan a day out."}]}
            try:
                status, headers, _ = http("POST", sender.url("/v1/chat/completions"), body)
            except OSError as e:
                return f"error: {e}"
            if status != 200:
                return f"status {status}"
            node = {k.lower(): v for k, v in headers.items()}.get("x-atmosphere-node")
            return peer_names.get(node, node)

        with ThreadPoolExecutor(SPREAD_CLIENTS) as pool:
            answers = list(pool.map(one, range(SPREAD_REQUESTS)))
        counts = {name: answers.count(name) for name in sorted(names)}
        failed = [a for a in answers if a not in counts]
        lines.append(f"spread: {cap} from {sender.service}, {SPREAD_REQUESTS} requests {SPREAD_CLIENTS} at a time: "
                     + ", ".join(f"{name} {k}" for name, k in counts.items())
                     + (f"; {len(failed)} failed ({failed[0]})" if failed else ""))
        problems += [f"{sender.service}: {cap}: {name} got none of {SPREAD_REQUESTS} requests"
                     for name, k in counts.items() if k == 0]
        if failed:
            problems.append(f"{sender.service}: {cap}: {len(failed)} of {SPREAD_REQUESTS} requests failed: {failed[0]}")
    return lines, problems


def main():
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", required=True, help="docker-compose project name")
    p.add_argument("--testnet", type=Path, default=root / "testnet", help="directory with the node configs")
    p.add_argument("--wait", type=float, default=0, help="retry for up to this many seconds")
    p.add_argument("--verbose", action="store_true", help="print what still fails on every retry")
    args = p.parse_args()

    questions = tomllib.loads((args.testnet / "questions.toml").read_text())["question"]
    start = time.monotonic()
    lists_agreed = None  # when every node first listed what Docker says is up
    while True:
        try:
            nodes = discover(args.project, args.testnet)
        except RuntimeError as e:
            print(f"check: {e}", file=sys.stderr)
            return 1
        up = [n for n in nodes if n.up]
        pass_started = time.monotonic() - start
        spread_lines = []
        if not up:
            problems, (answers, tool_calls), lists_ok = ["no node of the testnet is up"], (0, 0), False
        else:
            problems, (answers, tool_calls), lists_ok = check_once(nodes, questions)
            if not problems:
                spread_lines, problems = spread(nodes)
        elapsed = time.monotonic() - start
        if lists_ok and lists_agreed is None:
            lists_agreed = pass_started
        if not problems:
            down = [n.service for n in nodes if not n.up]
            caps = sorted({c for n in up for c in n.capabilities})
            tools = sorted(f"{t}@{n.name}" for n in up for t in n.tools)
            print(f"check: ok after {elapsed:.1f} s (lists agreed after {lists_agreed:.1f} s): {len(up)} nodes up, "
                  f"{len(down)} down{' (' + ', '.join(down) + ')' if down else ''}; "
                  f"every node lists {len(caps)} capabilities ({', '.join(caps)}); "
                  f"{answers} answers as expected; {len(tools)} shared tools"
                  f"{' (' + ', '.join(tools) + ')' if tools else ''}, {tool_calls} tool calls and agent runs as expected")
            for line in spread_lines:
                print(f"check: {line}")
            return 0
        if elapsed >= args.wait:
            print(f"check: FAILED after {elapsed:.1f} s ({len(problems)} problems):", file=sys.stderr)
            for line in problems[:40]:
                print(f"  {line}", file=sys.stderr)
            if len(problems) > 40:
                print(f"  ... and {len(problems) - 40} more", file=sys.stderr)
            return 1
        if args.verbose:
            print(f"check: {elapsed:5.1f} s: {len(problems)} problems, e.g. {problems[0]}", file=sys.stderr)
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
