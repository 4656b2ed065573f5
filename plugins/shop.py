"""An existing FastAPI app as a plug-in (type "asgi"): the same file runs under uvicorn on its
own, under ``valor serve``, and offline in the browser (FastAPI and Pydantic's compiled core
are bundled from wheels built for Pyodide).

``GET /`` greets, ``GET /items/{item_id}?detail=`` reads an item, ``PUT /items/{item_id}``
stores one (a Pydantic model: a body that does not fit it is FastAPI's own 422). The lifespan
seeds the items. (``plugins/readinglist`` has plain ``def`` endpoints: both work in both hosts.)
"""

from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield {"items": {1: Item(name="apple", price=0.5, tags=["fruit"])}}


app = FastAPI(title="shop", lifespan=lifespan)


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:
    return "Hello from FastAPI!"


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request, detail: bool = False) -> dict:
    item = request.state.items.get(item_id)
    if item is None:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    answer = {"id": item_id, "name": item.name}
    return {**answer, **item.model_dump()} if detail else answer


@app.put("/items/{item_id}")
async def put_item(item_id: int, item: Item, request: Request) -> dict:
    request.state.items[item_id] = item
    return {"id": item_id, **item.model_dump()}
