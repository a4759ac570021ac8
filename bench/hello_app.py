"""The framework ceiling: a Quart hello-world, served by Hypercorn exactly like our apps."""

from quart import Quart

app = Quart(__name__)


@app.get("/")
async def hello() -> str:
    return "Hello, world!"
