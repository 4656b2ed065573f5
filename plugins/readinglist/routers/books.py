"""``/books``: list, read and add books; ``/books.csv`` streams the shelf as CSV rows."""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import StreamingResponse

from ..models import Book
from ..shelf import Shelf, get_shelf

router = APIRouter()
ShelfDep = Annotated[Shelf, Depends(get_shelf)]


@router.get("/books")
def list_books(shelf: ShelfDep) -> dict:
    return {"books": [{"id": n, **book.model_dump()} for n, book in shelf.books.items()]}


@router.get("/books/{number}")
def read_book(number: int, shelf: ShelfDep) -> dict:
    book = shelf.books.get(number)
    if book is None:
        raise HTTPException(status_code=404, detail=f"no book {number}")
    return {"id": number, **book.model_dump()}


@router.post("/books", status_code=201)
def add_book(book: Book, shelf: ShelfDep) -> dict:
    return {"id": shelf.add(book), **book.model_dump()}


@router.get("/books.csv")
def export(rows: int = 3) -> StreamingResponse:
    # A sync generator: Starlette iterates it in a thread on the server, inline in Pyodide.
    def lines():
        yield "number,title\n"
        for number in range(1, rows + 1):
            yield f"{number},book {number}\n"

    return StreamingResponse(lines(), media_type="text/csv")
