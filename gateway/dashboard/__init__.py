"""The dashboard and debug console (docs/dashboard.md).

- :mod:`debuglog`: each app's live debug log, written by the API, nodes and workers only while
  a console watches the app;
- :mod:`timeseries`: per-app per-minute samples for the charts;
- :mod:`local`: what `clarion up` needs (a token for the demo, the banner lines);
- :mod:`views`, :mod:`session`, :mod:`overview`: the Flask blueprint, sign-in and CSRF, and
  the figures it shows; ``static/``: the page (plain ES modules and CSS, no build step).

Nothing here is imported by the hot paths but :mod:`debuglog` and :mod:`timeseries`, which
need only Redis.
"""
