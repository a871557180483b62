"""The live explorer as a web app: a few JSON routes and one HTML page over an `Explorer`.

Why Starlette (+ uvicorn to serve it): the app is five small routes and one static page, and the
package already renders its dashboards as plain HTML with vanilla JS, so a thin, well-kept ASGI
toolkit fits: two small pure-Python dependencies, a `TestClient` that tests the routes in-process
without a server, and full control of every response (status codes, one-line errors, headers).
Gradio, what this field often uses for demos, would pull in a large dependency tree and a
front-end of its own, and own the request validation we need to do ourselves; FastAPI adds
pydantic models we do not need on top of the same Starlette core.

Routes (all GET, so the page's URL query is the whole state and a view can be shared as a link):
`/` the page; `/api/info` model, classes, SAEs, token grid; `/api/latents?sae=I` per-latent firing
summary; `/api/original?class=&seed=` the unedited sample; `/api/edit?...` original and edited
images plus the spec; `/api/spec.yaml?...` the edit as a `SteeringSpec` YAML; `/images/<sha>.png`
a cached image. Every query goes through `requests.parse_view`; a refused one is a 400 whose body is
one line saying what to fix. Starlette is imported inside `create_app`, so the package imports
without the optional `app` extra.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sae_lens import SAE

from sae_lens_dit.analysis.explorer.engine import Explorer
from sae_lens_dit.analysis.explorer.requests import BadRequest, parse_view
from sae_lens_dit.analysis.interventions import SAESource
from sae_lens_dit.hooking.hooked import HookedDiT

APP_EXTRA_HINT = "pip install 'sae-lens-dit[app]'"
PAGE = Path(__file__).with_name("index.html")


def create_app(
    pipe: Any,
    hooked: HookedDiT,
    saes: Sequence[SAE],
    cache_dir: str | Path,
    *,
    sources: Sequence[SAESource | None] | None = None,
    names: Sequence[str] | None = None,
    model: str | None = None,
    num_inference_steps: int = 20,
    max_strength: float = 100.0,
    max_cache_mb: float = 512.0,
) -> Any:
    """A Starlette app exploring `saes` on `pipe` (already loaded); writes only inside `cache_dir`.

    `sources` (one per SAE: release + sae_id, or folder) go into exported specs so `sae-lens-dit edit
    --spec` finds the SAEs; `model` names the backbone in the replay command; `num_inference_steps`
    is fixed for every sample; `max_strength` bounds |strength|; cached images beyond `max_cache_mb` are removed,
    least recently used first. `app.state.explorer` is the `Explorer`.
    """
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route
    except ImportError:
        raise ImportError(f"the live explorer needs starlette and uvicorn: {APP_EXTRA_HINT}") from None

    explorer = Explorer(
        pipe,
        hooked,
        saes,
        cache_dir,
        sources=sources,
        names=names,
        model=model,
        num_inference_steps=num_inference_steps,
        max_strength=max_strength,
        max_cache_mb=max_cache_mb,
    )

    def bad(message: str, status: int = 400) -> Response:
        return PlainTextResponse(" ".join(message.split()) + "\n", status_code=status)

    def view_of(request: Request):
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        return parse_view(query, explorer.limits)

    def guarded(handler):
        def endpoint(request: Request) -> Response:
            try:
                return handler(request)
            except BadRequest as err:  # anything else is a bug of the app, not bad input: a 500 with its traceback
                return bad(str(err))

        return endpoint

    def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(), headers={"Cache-Control": "no-store"})

    def info(request: Request) -> Response:
        return JSONResponse(explorer.info())

    def latents(request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"sae"})
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; /api/latents reads ['sae']")
        text = request.query_params.get("sae", "0")
        if not text.isdigit() or not int(text) < len(explorer.saes):
            raise BadRequest(f"sae must be in 0..{len(explorer.saes) - 1}, received {text[:20]!r}")
        return JSONResponse(explorer.latents(int(text)))

    def original(request: Request) -> Response:
        start = time.perf_counter()
        name = explorer.original(view_of(request))
        return JSONResponse({"image": f"/images/{name}", "seconds": round(time.perf_counter() - start, 3)})

    def edited(request: Request) -> Response:
        start = time.perf_counter()
        result = explorer.edited(view_of(request))
        result["before"], result["after"] = f"/images/{result['before']}", f"/images/{result['after']}"
        result["seconds"] = round(time.perf_counter() - start, 3)
        return JSONResponse(result)

    def spec_yaml(request: Request) -> Response:
        text = explorer.spec_yaml(view_of(request))
        headers = {"Content-Disposition": 'attachment; filename="edit.yaml"'}
        return PlainTextResponse(text, media_type="application/x-yaml", headers=headers)

    def image(request: Request) -> Response:
        path = explorer.image_path(request.path_params["name"])
        if not path.is_file():
            return bad(f"no cached image {path.name}; request it through /api/original or /api/edit", 404)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=86400, immutable"})

    routes = [
        Route("/", guarded(page)),
        Route("/api/info", guarded(info)),
        Route("/api/latents", guarded(latents)),
        Route("/api/original", guarded(original)),
        Route("/api/edit", guarded(edited)),
        Route("/api/spec.yaml", guarded(spec_yaml)),
        Route("/images/{name}", guarded(image)),
    ]
    app = Starlette(routes=routes)
    app.state.explorer = explorer
    return app
