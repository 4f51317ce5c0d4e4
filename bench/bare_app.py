"""The yardstick: a FastAPI endpoint that does nothing but answer a constant JSON."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/constant")
async def constant() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/healthz")
async def health() -> dict[str, str]:
    return {"status": "ok"}
