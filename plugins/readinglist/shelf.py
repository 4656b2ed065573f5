"""Where the books are: a plain ``def`` dependency hands the shelf to the endpoints."""

from .models import Book


class Shelf:
    def __init__(self) -> None:
        self.books: dict[int, Book] = {1: Book(title="Dune", author="Frank Herbert", year=1965)}

    def add(self, book: Book) -> int:
        number = max(self.books, default=0) + 1
        self.books[number] = book
        return number


SHELF = Shelf()


def get_shelf() -> Shelf:
    return SHELF
