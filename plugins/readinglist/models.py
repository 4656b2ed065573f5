"""The app's Pydantic models."""

from pydantic import BaseModel, Field


class Book(BaseModel):
    title: str = Field(min_length=1)
    author: str
    year: int = Field(gt=0)
