"""An MCP client (the official Python SDK's) using a node's `/mcp`.

    python mesh_client.py URL TOOL ARGUMENTS_JSON

Lists the tools, calls TOOL with the arguments and prints what it saw as
JSON: {"tools": [{"name", "description", "input_schema"}], "call": {...}}.
"""

import asyncio
import json
import sys

from mcp import Client


async def main(url: str, tool: str, arguments: dict) -> None:
    async with Client(url) as client:
        listed = await client.list_tools()
        result = await client.call_tool(tool, arguments)
        print(
            json.dumps(
                {
                    "tools": [
                        {
                            "name": t.name,
                            "description": t.description,
                            "input_schema": t.input_schema,
                        }
                        for t in listed.tools
                    ],
                    "call": result.model_dump(mode="json", by_alias=True),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
