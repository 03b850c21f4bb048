"""The console: ccgate's web face at ``/``, server-rendered, for operators and their users.

``view`` (templates, headers, static assets), ``web`` (what every page shares: the
sign-in cookie, forms and CSRF, server-sent events), one module per page (``signin``,
``overview``, ``keys``, ``usage`` with its numbers in ``series``, ``sessions``,
``settings``, ``loops``, ``accounts``; the plan card of the overview and the accounts page
is ``plan``) and ``routes`` (all of them, for the app); who is at the console is
``ccgate.access.signins``. Every piece of text from a model, a tool, a
key name or a user is rendered by autoescaping templates; pages carry a
Content-Security-Policy that allows only the console's own script and style.
"""
