"""An MCP server for the tests, on the official Python SDK (`mcp` 2.x).

    python tools_server.py                 # over stdin and stdout
    python tools_server.py --http PORT     # streamable HTTP at /mcp

Tools: `add` (two integers), `shout` (text), `fail` (always an error
result), `sleep` (seconds), `sleeping` (how many sleeps are under way:
cancelled ones end), `learn` (adds a tool `fresh` and tells the
client the tools changed), `die` (the process exits at once) and
`camera-front` (a photo, as a camera on an edge gateway would give). With
`ATMOSPHERE_BROKEN_SCHEMA=1` it also lists `broken`, whose input schema is
not valid JSON Schema; with `ATMOSPHERE_PROBE_TOOLS=N`, N more tools
`probe-<i>` (for the benchmarks' large meshes); with
`ATMOSPHERE_TOOL_PREFIX=p-` every tool's name starts with `p-` (two
servers of one node with different tools).
"""

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("atmosphere-test-tools", log_level="WARNING")


@server.tool(description="Adds two integers and returns the sum.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Returns the text in capital letters.")
def shout(text: str) -> str:
    return text.upper()


@server.tool(description="Always fails.")
def fail() -> str:
    raise ToolError("this tool always fails")


SLEEPING = 0


@server.tool(description="Waits, then answers.")
async def sleep(seconds: float) -> str:
    global SLEEPING
    SLEEPING += 1
    try:
        await asyncio.sleep(seconds)
    finally:
        # Also when the client cancels the call (notifications/cancelled).
        SLEEPING -= 1
    return "awake"


@server.tool(description="How many calls of sleep are still waiting.")
def sleeping() -> int:
    return SLEEPING


def fresh() -> str:
    return "fresh"


@server.tool(description="Adds the tool `fresh` and says the tools changed.")
async def learn(ctx: Context) -> str:
    server.add_tool(fresh, description="A tool that appeared later.")
    # Clients of protocol versions before 2026-07-28 are told directly;
    # later ones through their `subscriptions/listen`.
    await ctx.session.send_tool_list_changed()
    await ctx.notify_tools_changed()
    return "learnt"


@server.tool(
    name="camera-front",
    description="Takes a photo with the barn's front camera and describes what it shows.",
)
def camera_front(zoom: int = 1) -> str:
    return f"photo taken at zoom {zoom}: two llamas by the gate"


if os.environ.get("ATMOSPHERE_BROKEN_SCHEMA") == "1":

    @server.tool(description="A tool whose input schema is not JSON Schema.")
    def broken() -> str:
        return "unreachable"

    server._tool_manager.get_tool("broken").parameters = {
        "type": "object",
        "properties": {"a": {"type": "no-such-type"}},
    }


def probe(text: str = "") -> str:
    return text


for i in range(int(os.environ.get("ATMOSPHERE_PROBE_TOOLS", "0"))):
    server.add_tool(
        probe,
        name=f"probe-{i}",
        description=f"Probe number {i}: echoes its text (a tool for load tests).",
    )


@server.tool(description="Ends the server's process at once.")
def die() -> str:
    os._exit(3)


_prefix = os.environ.get("ATMOSPHERE_TOOL_PREFIX", "")
if _prefix:
    _tools = server._tool_manager._tools
    for _name in list(_tools):
        _tool = _tools.pop(_name)
        _tool.name = _prefix + _name
        _tools[_tool.name] = _tool


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run(transport="streamable-http", port=int(sys.argv[2]))
    else:
        server.run()
