"""Imports a module that sits beside it in its folder."""

import helper_words

from valor import vlugin


@vlugin
def on_request(req):
    return helper_words.greeting()
