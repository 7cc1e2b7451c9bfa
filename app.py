"""Grad-CAM Chat: the Gradio app. ``python app.py`` serves it (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured).

Thin wiring only: every answer comes from :class:`explainer.chat.ChatSession` (one per browser session, kept in a
``gr.State``), audits from :mod:`explainer.evaluation.audit`, limits and message folding from
:mod:`explainer.server.serving`; the
functions here turn replies into chat messages and component values, and guard every event (uploads only from
this server's upload folder, time budgets, plain errors). Public endpoints: ``/chat`` (one chat turn), ``/explain``
(one image and question in: the Markdown answer, the overlay and the facts as JSON; also the MCP tool
``explain``) and ``/audit`` (a zip of a validation set in: a report and the results out).

A ``gr.Blocks`` with ``gr.Chatbot`` + ``gr.MultimodalTextbox`` rather than ``gr.ChatInterface``: the model picker,
the model upload and the examples all speak in the same conversation, and the conversation lives on the server
(so ``/chat`` takes just the new message, and an API client keeps its conversation like a browser does).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import inspect
import json
import logging
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.exceptions import InvalidPathError
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from PIL import Image as PILImage
from pydantic import ValidationError
from starlette.middleware import Middleware

from explainer.cams import METHODS
from explainer.chat import (
    MAX_TOP_K,
    ChatSession,
    Reply,
    SettingError,
    Settings,
    answer_once,
    escape_markdown,
    render,
)
from explainer.deadline import check as check_deadline
from explainer.deadline import time_budget
from explainer.engine import default_method
from explainer.errors import ExplainerError
from explainer.evaluation.audit import AuditOptions, audit_folder
from explainer.inputs.dicom import DICOM_NAME, is_dicom
from explainer.inputs.images import pixel_budget
from explainer.models.loading import LoadedModel
from explainer.prose import quote
from explainer.render import COLORMAPS
from explainer.server.archive import extract_audit_folder, remove
from explainer.server.budget import ModelLimits, check_loaded_model, check_model_file
from explainer.server.serving import (
    McpRequestLimit,
    QueueGuard,
    ServerLimits,
    fold,
    forwarded_allow_ips,
    painted_mask,
)
from explainer.server.shelf import (
    DEMO_MODEL_NAMES,
    EXAMPLES_DIR,
    ModelMenu,
    ModelShelf,
    UploadRegistry,
    builtin_choices,
    load_default,
)
from explainer.server.uploads import REFUSED, UploadRefused, log_refusal, uploaded_file, uploaded_files

logger = logging.getLogger("gradcam_chat")

TITLE = "Grad-CAM Chat"
#: Requests served at once; more wait in the queue, in order. Two CPUs: a third would only slow the others down.
CONCURRENCY = 2
QUEUE_SIZE = 64
#: Uploads above this are refused before they reach the app (user models can be tens of megabytes).
MAX_FILE_SIZE = "200mb"
#: The MCP library's limit on one request's body: an image sent to the MCP tool as a data URL takes 4/3 of its size.
MCP_REQUEST_LIMIT = DEFAULT_MAX_REQUEST_BODY_SIZE
#: The answer to a payload that is not in the form an event takes (sent by hand, not by the page).
MALFORMED = "That request's data is not in the form this app takes. Please use the page or the documented API."
#: The answer to any failure we did not foresee: logged in full on the server, never shown.
FAILED = "Sorry, something went wrong on the server while answering. The conversation is kept; please try again."
#: The brush colour of "Where should it look?" (also the outline of the visitor's region in answers).
REGION_COLOUR = "#ff00ff"
#: The method setting meaning "the model's default" (Grad-CAM, or HiResCAM for a vision transformer).
AUTO = "auto"
#: The Audit tab's model choice meaning "the model answering in the chat" (e.g. the visitor's uploaded model).
CURRENT_MODEL = "(current)"
#: Temporary files (uploads, answer pictures) live this long (seconds), swept this often: as long as a session.
CACHE_AGE = 3600
CACHE_SWEEP = 600
#: How much of a user's message is echoed in the chat (the chat reads only the start anyway).
ECHO_CHARS = 2000
#: The longest pop-up message: every message quotes visitors' text briefly (messages.quote); this is the last guard.
POPUP_CHARS = 1200
SETTING_NAMES = ("opacity", "colormap", "threshold", "top_k", "method")
#: Pictures in answers: at least 320 px wide (a 128-pixel demo image is not a thumbnail), and below their caption
#: rather than under it.
CSS = """
#chatbot .bot-row .image-container { padding-top: 2.4em; }
#chatbot .bot-row .image-frame { min-width: min(320px, 100%); }
#chatbot .bot-row .image-frame img { width: 100%; height: auto; max-height: 420px; object-fit: contain; }
"""
PLACEHOLDER = (
    "### Ask a classifier what it looks at\n"
    "Upload an image (📎) and ask **why?**, **what is it?**, **how confident is it?**, **show the region**, "
    "**does it hold up?**, or pick an example below."
)


def launch_options() -> dict[str, Any]:
    """Keyword arguments of ``launch()`` shared by ``python app.py``, the tests and the benchmark."""
    # show_error=False: an unexpected exception's text (paths, modules) never reaches the page; every event below
    # catches its own errors and raises gr.Error with a plain message instead.
    # mcp_server=True: the /explain event is also an MCP tool (Gradio's MCP server at /gradio_api/mcp/).
    return {"max_file_size": MAX_FILE_SIZE, "allowed_paths": [str(EXAMPLES_DIR)], "show_error": False, "css": CSS,
            "mcp_server": True}


def upload_folder() -> str:
    """Where this server keeps visitors' uploads (the only folder a file reference may point into)."""
    return gr.utils.get_upload_folder()


# ------------------------------------------------------------------------------------------ Reply -> messages


def picture_file(image: np.ndarray) -> str:
    """``image`` as a file in Gradio's upload folder, named by its pixels (an answer shown again is not encoded again).

    Written there, Gradio serves it as is and counts it among the app's temporary files, so ``delete_cache`` sweeps
    it like an upload: nothing accumulates in the working directory.

    JPEG at quality 92 without chroma subsampling: indistinguishable from the original on a heatmap overlay, and
    3–5 ms to write a 640×480 picture where PNG takes 30–50 ms, a cost every "why?" would pay.
    """
    pixels = np.ascontiguousarray(image, np.uint8)
    digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
    path = Path(upload_folder()) / "pictures" / f"{digest}.jpg"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{threading.get_ident()}.part")
        PILImage.fromarray(pixels).save(partial, format="jpeg", quality=92, subsampling=0)
        partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return str(path)


def picture(image: np.ndarray, caption: str) -> gr.Image:
    """A chat picture: written once as a file, so later turns resend its path instead of re-encoding pixels."""
    return gr.Image(value=picture_file(image), label=caption, alt_text=caption, show_label=True, format="jpeg",
                    buttons=["download", "fullscreen"])


def reply_messages(reply: Reply) -> list[dict]:
    """The bot's messages for ``reply``: its Markdown, then each picture; suggestions as buttons on the last one."""
    messages = [{"role": "assistant", "content": reply.markdown}]
    messages += [{"role": "assistant", "content": picture(image, caption)} for image, caption in reply.images]
    if reply.suggestions:
        messages[-1]["options"] = [{"value": text} for text in reply.suggestions]
    return messages


def user_messages(text: str, files: list[str]) -> list[dict]:
    """The user's turn as shown in the chat: uploads first, then the text exactly as typed (escaped).

    A DICOM file is not shown back as a file: its name is often the patient's, and a browser cannot preview it.
    """
    messages = [{"role": "user", "content": f"📎 {DICOM_NAME}" if is_dicom(path) else {"path": path}}
                for path in files]
    if text.strip():
        messages.append({"role": "user", "content": str(escape_markdown(text, ECHO_CHARS))})
    return messages


def message_parts(message: Any) -> tuple[str, list[str]]:
    """(text, uploaded file paths) of a raw MultimodalTextbox payload (``None`` or partial payloads are fine).

    Raises :class:`UploadRefused` when a file reference points outside this server's upload folder.
    """
    message = message if isinstance(message, dict) else {}
    text = message.get("text")
    return (text if isinstance(text, str) else ""), uploaded_files(message.get("files"), upload_folder())


def upload_path(upload: Any) -> str | None:
    """The checked server path of a raw file payload, or None (:class:`UploadRefused` outside the upload folder)."""
    return uploaded_file(upload, upload_folder())


def without_options(messages: list[dict]) -> list[dict]:
    """Earlier suggestions disappear when the conversation moves on (only the latest answer offers buttons)."""
    return [{k: v for k, v in message.items() if k != "options"} for message in messages]


def popup(text: str) -> str:
    """``text`` as a pop-up shows it: HTML-escaped (Gradio renders a pop-up's text as HTML, so a visitor's
    ``<img src=...>`` quoted in an error would load), and at most :data:`POPUP_CHARS` characters."""
    text = str(text)
    text = text if len(text) <= POPUP_CHARS else text[: POPUP_CHARS - 1] + "…"
    return html.escape(text, quote=False)


def refusal(text: str, title: str = "Error") -> gr.Error:
    """The error pop-up for ``text`` (see :func:`popup`); raise it from an event."""
    return gr.Error(popup(text), title=title)


def warn(text: str) -> None:
    """A warning pop-up for ``text`` (see :func:`popup`); the event goes on."""
    gr.Warning(popup(text))


def quiet(error: gr.Error) -> gr.Error:
    """``error`` without Gradio's traceback on the console: a user error is one line at most (a refused file
    reference: explainer/server/uploads.py), and an unforeseen one is logged in full once, by :func:`event_boundary`."""
    error.print_exception = False
    return error


def refuse_quietly(demo: gr.Blocks) -> None:
    """Gradio's own refusals of a payload, before any event runs, as one log line each instead of a traceback.

    Gradio checks file payloads itself (a file that was not uploaded, a file payload without its ``meta`` marker)
    and prints a traceback for every refusal; a probe of a thousand paths would be a megabyte of log. Here a file
    refused by Gradio gets the gate's fixed message (:data:`explainer.server.uploads.REFUSED`) and its one line, another
    malformed payload :data:`MALFORMED`, and a component's own refusal (a value not among its choices) stays as it
    is, without the traceback.
    """
    preprocess = demo.preprocess_data

    async def preprocess_data(*args: Any, **kwargs: Any) -> Any:
        try:
            return await preprocess(*args, **kwargs)
        except gr.Error as err:
            raise quiet(err)  # noqa: B904 (the same error, re-raised)
        except InvalidPathError as err:
            log_refusal("not uploaded, refused by Gradio", str(err))
            raise quiet(refusal(REFUSED)) from None
        except ValidationError as err:
            files = [problem for problem in err.errors() if "gradio.FileData" in str(problem.get("msg"))]
            if files:
                log_refusal("no Gradio file marker", files[0].get("input"))
                raise quiet(refusal(REFUSED)) from None
            logger.warning("refused a malformed payload: %s", repr(err.errors()[:1])[:120])
            raise quiet(refusal(MALFORMED)) from None

    demo.preprocess_data = preprocess_data


def event_boundary(fn: Callable) -> Callable:
    """Wrap an event: a user error becomes ``gr.Error`` with its plain message, anything else is logged in full on
    the server and shown as :data:`FAILED`. No exception text (paths, modules, tracebacks) reaches a visitor."""

    def translate(err: Exception) -> gr.Error:
        if isinstance(err, ExplainerError):
            return quiet(refusal(str(err)))
        logger.error("event %s failed", fn.__name__, exc_info=err)
        return quiet(refusal(FAILED))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error as err:
                raise quiet(err)  # noqa: B904 (the same error, re-raised)
            except Exception as err:
                raise translate(err) from None
        return generator

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error as err:
            raise quiet(err)  # noqa: B904 (the same error, re-raised)
        except Exception as err:
            raise translate(err) from None
    return function


# ----------------------------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    """A bundled example: an image, the question to ask about it and the model to ask."""

    image: str
    question: str
    model: str
    caption: str = ""


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    """The examples listed in ``examples.json`` whose image file exists (none when the file is missing)."""
    listing = folder / "examples.json"
    if not listing.is_file():
        return []
    entries = json.loads(listing.read_text(encoding="utf-8"))
    entries = entries.get("examples", []) if isinstance(entries, dict) else entries
    examples = []
    for entry in entries:
        image = folder / str(entry.get("image") or entry.get("file") or "")
        if image.is_file():
            examples.append(Example(str(image), entry.get("question") or "Why?",
                                    entry.get("model") or "", entry.get("caption") or ""))
    return examples


# ------------------------------------------------------------------------------------------------ the app


@dataclass
class Visit:
    """One browser session: its conversation with the chat, its models, and the messages on screen."""

    chat: ChatSession
    menu: ModelMenu
    messages: list[dict] = field(default_factory=list)
    folded: int = 0  # earlier messages no longer on screen (see fold)


class ChatApp:
    """Builds the Blocks and holds what all sessions share: the model shelf, the default model, the examples."""

    def __init__(self, shelf: ModelShelf | None = None, limits: ServerLimits | None = None):
        self.shelf = shelf or ModelShelf()
        self.limits = limits or ServerLimits.from_env()
        self.uploads = UploadRegistry(self.limits.uploaded_models)
        self.model_limits = ModelLimits.from_env()
        # The default model is loaded and warmed up now, at start-up, not on the first question.
        self.default_name, self.default, self.default_reason = load_default(self.shelf)
        self.builtins = builtin_choices(self.default_name)
        self.examples = [e for e in load_examples() if e.model in {"", *(n for _l, n in self.builtins)}]

    def launch(self, **options: Any) -> gr.Blocks:
        """Build (once) and serve the app with :func:`launch_options` plus ``options``; returns the Blocks.

        Two middlewares stand in front of Gradio's routes: the queue guard counts who listens for their answers,
        and an MCP tool call over the MCP library's request limit gets a readable tool error instead of HTTP 413.
        The client address is the connection's, unless it comes from one of ``EXPLAINER_TRUSTED_PROXIES``.
        """
        demo = getattr(self, "demo", None) or self.build()
        middleware = [Middleware(self.guard.middleware), Middleware(McpRequestLimit, limit=MCP_REQUEST_LIMIT)]
        app_kwargs = {**options.pop("app_kwargs", {})}
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), *middleware]
        with warnings.catch_warnings(), forwarded_allow_ips(self.limits.trusted_proxies):
            # The warning is about the chat's and the audit's state; neither stays a tool (below).
            warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
            demo.launch(**{**launch_options(), **options, "app_kwargs": app_kwargs})
        server = getattr(demo, "mcp_server_obj", None)
        if server is not None:  # one tool: "explain" (the chat's turn needs a conversation an assistant lacks)
            server.tool_to_endpoint = {tool: api for tool, api in server.tool_to_endpoint.items() if api == "/explain"}
        return demo

    def preload(self) -> None:
        """In the background: the demo models, and the layers "show layers" explains (start this once serving)."""
        demos = [name for _label, name in self.builtins if name in DEMO_MODEL_NAMES and name != self.default_name]
        self.shelf.preload([self.default_name, *demos])

    # -------------------------------------------------------------------------------------------- sessions

    def new_visit(self) -> Visit:
        menu = ModelMenu(self.shelf, list(self.builtins), registry=self.uploads)
        return self._attach(Visit(ChatSession(self.default, loader=menu.get, model_names=menu.names()), menu))

    def _attach(self, visit: Visit) -> Visit:
        """Make ``visit`` the one told when its menu loses its uploaded model."""
        def dropped(model: LoadedModel, evicted: bool) -> None:  # a function: deep copies leave it alone
            self.model_dropped(visit, model, evicted)

        visit.menu.on_drop = dropped
        return visit

    def model_dropped(self, visit: Visit, model: LoadedModel, evicted: bool) -> None:
        """``visit`` lost its uploaded ``model``: answer with the default model, and say why if it was evicted."""
        switched = visit.chat.forget_model(model, self.default)
        visit.chat.model_names = tuple(visit.menu.names())
        if evicted and switched:
            text = render("model_dropped", evicted=True, name=model.name, fallback=self.default_name,
                          limit=self.uploads.limit)
            visit.messages = [*without_options(visit.messages), {"role": "assistant", "content": text}]

    def _end_visit_callback(self) -> Callable[[Visit | None], None]:
        # A plain function, not the bound method: Gradio deep-copies components per request, and a deep copy of a
        # bound method copies its object (this app, with every loaded model: 1.3 s per page load).
        def end_visit(visit: Visit | None) -> None:
            self.end_visit(visit)

        return end_visit

    def end_visit(self, visit: Visit | None) -> None:
        """The session is over (tab closed, or idle past its time to live): free its uploaded model."""
        if isinstance(visit, Visit):
            visit.menu.release()

    def outputs(self, visit: Visit, busy: bool = False) -> tuple:
        """Values of the chat's outputs: the conversation, the input box, the model picker, the settings, the state."""
        box = gr.MultimodalTextbox(value=None, interactive=not busy)
        picker = gr.Dropdown(choices=visit.menu.choices(), value=visit.menu.key_of(visit.chat.model))
        settings = [getattr(visit.chat.settings, name) for name in SETTING_NAMES]
        settings[SETTING_NAMES.index("method")] = visit.chat.settings.method or AUTO  # None: the model's default
        return visit.messages, box, picker, *settings, visit

    def show(self, visit: Visit, reply: Reply) -> None:
        messages = without_options(visit.messages) + reply_messages(reply)
        visit.messages, visit.folded = fold(messages, self.limits.shown_messages, visit.folded)

    @contextlib.contextmanager
    def budget(self, request: gr.Request | None) -> Iterator[None]:
        """This turn's budgets: its time (the work also stops early when the visitor's connection is gone), and the
        pixels its images may decode."""
        session = getattr(request, "session_hash", None)
        with time_budget(self.limits.turn_seconds, (lambda: self.gone(session)) if session else None), self.pixels():
            yield

    def pixels(self, total: int | None = None) -> contextlib.AbstractContextManager:
        """One request's pixel budget: ``total`` pixels in all (default: the per-request limit), each image at most
        the per-image limit; every image file is counted from its header before it is decoded."""
        return pixel_budget(total or self.limits.request_pixels, self.limits.image_pixels)

    def gone(self, session: str) -> bool:
        """Whether the visitor of ``session`` has disconnected (Gradio drops its message stream then)."""
        queue = getattr(getattr(self, "demo", None), "_queue", None)
        return queue is not None and session not in queue.pending_messages_per_session

    # ---------------------------------------------------------------------------------------------- events

    @event_boundary
    def chat_turn(self, message: Any, visit: Visit | None, request: gr.Request = None) -> Iterator[tuple]:
        """One turn: show the user's message at once, then the answer (the ``/chat`` endpoint)."""
        visit = visit or self.new_visit()
        try:
            text, files = message_parts(message)
        except UploadRefused as err:  # a reference to a server file: refused before anything is opened
            text = message.get("text") if isinstance(message, dict) else ""
            visit.messages = without_options(visit.messages) + user_messages(str(text or ""), [])
            self.show(visit, visit.chat.refuse(err))
            yield self.outputs(visit)
            return
        yield from self.answer(visit, text, files, request)

    def answer(self, visit: Visit, text: str, files: list[str], request: gr.Request | None = None,
               region: np.ndarray | None = None) -> Iterator[tuple]:
        """Show the user's message, a progress line for slow answers, then the answer; never loses the chat.

        ``region`` is a mask the visitor drew: the answer then compares the evidence with it.
        """
        if not text.strip() and not files:
            yield self.outputs(visit)
            return
        visit.messages = without_options(visit.messages) + user_messages(text, files)
        yield self.outputs(visit, busy=True)
        asked = visit.messages
        try:
            note = visit.chat.progress_note(text)
            if note:  # slow answers (Score-CAM, trust check, comparisons) say what they are doing meanwhile
                visit.messages = [*asked, {"role": "assistant", "content": note}]
                yield self.outputs(visit, busy=True)
                visit.messages = asked
            with self.budget(request):
                reply = visit.chat.respond(text, files, region=region)
            self.show(visit, reply)
        except Exception:  # a failure of the wiring itself (e.g. writing a picture): apologise in the chat
            logger.exception("chat turn failed")
            visit.messages = [*asked, {"role": "assistant", "content": FAILED}]
        yield self.outputs(visit)

    @event_boundary
    def region_canvas(self, visit: Visit | None) -> dict:
        """The editor's canvas: the conversation's current image, to paint the expected region on."""
        current = visit.chat.current if isinstance(visit, Visit) else None
        if current is None:
            raise refusal(render("region_no_image"))
        return {"background": current.image, "layers": [], "composite": None}

    @event_boundary
    def check_region(self, editor: Any, visit: Visit | None, request: gr.Request = None) -> Iterator[tuple]:
        """The visitor painted where the evidence should be: compare the model's map with it.

        The editor's value arrives raw (``preprocess=False``): its layers are PNG uploads, each counted against the
        pixel budget from its header and reduced to its alpha channel, never decoded whole by Gradio first.
        """
        visit = visit or self.new_visit()
        with self.pixels():
            mask = painted_mask(editor, upload_folder(), self.limits.painted_layers)
        if mask is None:
            raise refusal(render("region_nothing_painted"))
        yield from self.answer(visit, render("region_question"), [], request, region=mask)

    @event_boundary
    def follow_up(self, visit: Visit | None, selected: gr.SelectData, request: gr.Request = None) -> Iterator[tuple]:
        """A suggested question was clicked: ask it."""
        yield from self.answer(visit or self.new_visit(), str(selected.value), [], request)

    @event_boundary
    def run_example(self, index: Any, visit: Visit | None, request: gr.Request = None) -> Iterator[tuple]:
        """An example was clicked: switch to its model if needed, then upload its image with its question."""
        visit = visit or self.new_visit()
        if index is None:
            yield self.outputs(visit)
            return
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(self.examples):
            raise refusal(f"There is no example {quote(index)}: click one of the {len(self.examples)} examples "
                          "below the chat.")
        example = self.examples[index]
        if example.model and visit.menu.key_of(visit.chat.model) != example.model:
            try:
                visit.chat.set_model(visit.menu.get(example.model))
            except ExplainerError as err:  # the example is still worth asking of the current model
                warn(str(err))
        yield from self.answer(visit, example.question, [example.image], request)  # our own file: not an upload

    @event_boundary
    def pick_model(self, key: str, visit: Visit | None) -> tuple:
        """The model picker changed: answer with that model from now on, and say so in the chat."""
        visit = visit or self.new_visit()
        if not isinstance(key, str):
            raise refusal(f"There is no model {quote(key)} in the menu; pick one of its entries.")
        if key != visit.menu.key_of(visit.chat.model):
            try:
                model = visit.menu.get(key)
            except ExplainerError as err:
                warn(str(err))
                return self.outputs(visit)
            # The picker is the user's move: shown as their message, so the answers it brings are a turn apart.
            visit.messages = without_options(visit.messages) + user_messages(f"Use the {key} model", [])
            self.show(visit, visit.chat.switch_model(model))
        return self.outputs(visit)

    @event_boundary
    def upload_model(self, model_file: Any, labels_file: Any, visit: Visit | None) -> tuple:
        """Load a user's model file (Keras safe mode) into this session's menu and switch to it."""
        visit = visit or self.new_visit()
        try:
            # The architecture is checked against the memory budgets before a single weight is allocated.
            key, model = visit.menu.add_upload(upload_path(model_file), upload_path(labels_file),
                                               checker=lambda path: check_model_file(path, self.model_limits))
        except ExplainerError as err:
            raise refusal(str(err), title="The model was not loaded") from None
        return self._switch_to_own(visit, key, model)

    @event_boundary
    def load_hub(self, model_id: Any, visit: Visit | None) -> tuple:
        """Load a Hugging Face Hub model (or Keras Hub preset) for this session, like an upload, and switch to it."""
        visit = visit or self.new_visit()
        try:
            key, model = visit.menu.add_hub(model_id if isinstance(model_id, str) else "",
                                            checker=lambda loaded: check_loaded_model(loaded.keras_model,
                                                                                      self.model_limits),
                                            max_bytes=self.limits.download_mb * 2**20)
        except ExplainerError as err:
            raise refusal(str(err), title="The model was not loaded") from None
        return self._switch_to_own(visit, key, model)

    def _switch_to_own(self, visit: Visit, key: str, model: LoadedModel) -> tuple:
        visit.chat.model_names = tuple(visit.menu.names())
        visit.messages = without_options(visit.messages) + user_messages(f"Use my model {key}", [])
        self.show(visit, visit.chat.switch_model(model))
        return self.outputs(visit)

    @event_boundary
    def change_setting(self, visit: Visit | None, *values: Any) -> Visit:
        """A control in the settings panel changed: apply all of them to this session (nothing if invalid)."""
        visit = visit or self.new_visit()
        try:
            visit.chat.update_settings(**dict(zip(SETTING_NAMES, values, strict=True)))
        except (SettingError, TypeError, ValueError) as err:
            warn(str(err))
        return visit

    @event_boundary
    def clear(self, visit: Visit | None) -> tuple:
        """The chat's bin icon: start a fresh conversation with the same model and settings."""
        old = visit or self.new_visit()
        visit = self._attach(Visit(ChatSession(old.chat.model, loader=old.menu.get, model_names=old.menu.names(),
                                               settings=old.chat.settings), old.menu))
        return self.outputs(visit)

    @event_boundary
    def explain(self, image: str, question: str = "Why?", model_name: str = "", expected_region: str = "",
                request: gr.Request = None) -> tuple[str, np.ndarray | None, dict]:
        """Ask an image classifier about one image and see where it looks (Grad-CAM), without an LLM.

        Every number in the answer is measured: the model's prediction and probability, the Grad-CAM heatmap of
        the evidence, the region that drove the decision (box, share of the image, its place in words), and, when
        asked, how the score changes when that region is hidden. Nothing is kept between calls.

        Size limit over MCP: one request may be at most 4 MiB, so an image sent as a data URL may be at most about
        3 MB (base64 adds a third); resize or recompress a larger picture (e.g. JPEG, 2000 px) before sending it.

        Args:
            image: The image to explain (PNG, JPEG, WebP, BMP, GIF, TIFF, or a DICOM .dcm file), at most about 3 MB.
            question: Plain words: "why?", "what is it?", "how sure are you?", "why not a cat?", "does it hold up?".
            model_name: The classifier: "shapes" or "shapes-shortcut" (demo models), or an ImageNet model.
            expected_region: Optional: where the evidence should be, "x, y, w, h" in pixels or words ("lower left").

        Returns:
            The answer in Markdown, the heatmap picture (or None), and the measured facts as JSON.
        """
        name = model_name if isinstance(model_name, str) and model_name else self.default_name
        builtin = {n for _label, n in self.builtins}
        if name not in builtin:
            raise refusal(f"Unknown model {quote(name)}; choose one of {', '.join(sorted(builtin))}.")
        path = upload_path(image)  # before the model: a refused reference costs nothing
        model = self.shelf.get(name)
        with self.budget(request):
            region = expected_region.strip()[:200] if isinstance(expected_region, str) else ""
            reply = answer_once(model, path, question if isinstance(question, str) else "", region=region or None)
        return reply.markdown, reply.image, reply.to_dict()

    @event_boundary
    def audit(self, archive: Any, model_name: Any, method: Any, visit: Visit | None, request: gr.Request = None,
              progress: gr.Progress = gr.Progress()) -> tuple[str, list[str]]:  # noqa: B008 (Gradio reads it)
        """The Audit tab: a zip of class folders (and optional boxes.csv / masks/) in, report.html and results.jsonl
        out, with a progress bar. Bounded by the zip's size, its image count and the pixels its images declare
        (all checked before a pixel is decoded), and by a time limit (the report then covers the images explained
        so far); stops when the visitor leaves."""
        path = upload_path(archive)
        if path is None:
            raise refusal(render("audit_no_zip"))
        if not isinstance(method, str) or (method != AUTO and method not in METHODS):
            raise refusal(f"Unknown method {quote(method)}; choose one of {', '.join(METHODS)}.")
        model = self._audit_model(model_name, visit)
        method = default_method(model) if method == AUTO else method
        limits = self.limits
        work = Path(tempfile.mkdtemp(prefix="audit-", dir=upload_folder()))
        try:
            folder = extract_audit_folder(path, work / "in", max_images=limits.audit_images,
                                          max_pixels=limits.audit_pixels)
            desc = f"Explaining (an audit here stops after {limits.audit_seconds:g} s)"
            progress((0, folder.count), desc=desc, unit="images")

            def step(done: int, total: int) -> None:
                check_deadline()  # the visitor left: stop here
                progress((done, total), desc=desc, unit="images")

            session = getattr(request, "session_hash", None)
            with time_budget(None, (lambda: self.gone(session)) if session else None), \
                    self.pixels(limits.audit_pixels):
                # Masks are the finer region: with both, the boxes are not used (as the CLI takes one or the other).
                boxes = None if folder.masks else folder.boxes
                run = audit_folder(model, folder.images, work / "out", AuditOptions(method=method), boxes,
                                   folder.masks, name="the uploaded set", on_record=step,
                                   seconds=limits.audit_seconds)
        finally:
            remove(work / "in")
        text = render("audit_summary", run=run, model=model.name, method=METHODS[method].display_name,
                      threshold=AuditOptions().wrong_reason_threshold, notes=folder.notes + run.notes)
        return text, [str(run.report), str(run.results)]

    def _audit_model(self, key: Any, visit: Visit | None) -> LoadedModel:
        if key == CURRENT_MODEL:
            return (visit or self.new_visit()).chat.model
        if not isinstance(key, str) or key not in {name for _label, name in self.builtins}:
            raise refusal(f"Unknown model {quote(key)}.")
        return self.shelf.get(key)

    # ---------------------------------------------------------------------------------------------- layout

    def build(self) -> gr.Blocks:
        """The Blocks: a chat tab (model picker, own model upload, settings, examples) and a one-question tab."""
        # analytics_enabled=False: no telemetry or version check, the app makes no network calls of its own.
        # delete_cache: uploads and answer pictures older than CACHE_AGE are swept every CACHE_SWEEP seconds (the
        # example thumbnails are kept).
        with gr.Blocks(title=TITLE, fill_height=True, analytics_enabled=False,
                       delete_cache=(CACHE_SWEEP, CACHE_AGE)) as demo:
            # Each session's state is dropped when its tab closes or after session_seconds idle; its upload with it.
            visit = gr.State(None, time_to_live=self.limits.session_seconds, delete_callback=self._end_visit_callback())
            gr.Markdown(f"# {TITLE}\nUpload an image and ask what the classifier looks at. Answers are Grad-CAM "
                        "heatmaps with text filled in from measured numbers: no language model, no network.")
            with gr.Tab("Chat"):
                self._chat_tab(visit)
            with gr.Tab("Audit a validation set"):
                self._audit_tab(visit)
            with gr.Tab("One question (API)"):
                self._explain_tab()
        demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
        self.guard = QueueGuard(self.limits.queued_per_session, self.limits.queued_per_client,
                                self.limits.unread_seconds)
        self.guard.install(demo._queue)
        refuse_quietly(demo)
        self.demo = demo
        return demo

    def _chat_tab(self, visit: gr.State) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label=TITLE, height=640, placeholder=PLACEHOLDER, feedback_options=None,
                                     buttons=["copy", "copy_all"], elem_id="chatbot")
                box = gr.MultimodalTextbox(placeholder="Upload an image and ask a question, e.g. why?",
                                           file_types=["image", ".dcm"], file_count="multiple", sources=["upload"],
                                           max_plain_text_length=20_000, autofocus=True, show_label=False,
                                           elem_id="chat-input")
                examples = self._examples()
            with gr.Column(scale=1, min_width=280):
                picker = gr.Dropdown(self.builtins, value=self.default_name, label="Model", interactive=True)
                gr.Markdown(str(escape_markdown(self.default_reason)))
                with gr.Accordion("Use your own model", open=False):
                    model_file = gr.File(label="Model file (.keras or .h5)", file_types=[".keras", ".h5", ".hdf5"])
                    labels_file = gr.File(label="Labels (optional: a .txt file, one class a line)",
                                          file_types=[".txt"])
                    load = gr.Button("Load my model", variant="secondary")
                    hub_id = gr.Textbox(label="or a Hugging Face model id", placeholder="hf://owner/repo",
                                        max_lines=1)
                    hub_load = gr.Button("Load from the Hub", variant="secondary")
                with gr.Accordion("Where should it look?", open=False, elem_id="region-panel"):
                    gr.Markdown(render("region_help"))
                    fetch = gr.Button("Draw on the current image", size="sm", elem_id="region-fetch")
                    editor = gr.ImageEditor(type="numpy", image_mode="RGBA", sources=(), transforms=(),
                                            layers=False, label="Paint the region", elem_id="region-editor",
                                            brush=gr.Brush(colors=[REGION_COLOUR], color_mode="fixed",
                                                           default_size=12))
                    check = gr.Button("Is it looking here?", variant="primary", size="sm", elem_id="region-check")
                with gr.Accordion("Settings", open=False):
                    settings = self._settings()

        outputs = [chatbot, box, picker, *settings, visit]
        # Every event that runs a model shares one pool of CONCURRENCY workers; the rest wait in order.
        turn = {"outputs": outputs, "show_progress": "minimal", "concurrency_id": "model",
                "concurrency_limit": CONCURRENCY}
        # preprocess=False: uploads reach the chat as raw file payloads, so a file that is not an image gets the
        # chat's own explanation instead of Gradio's type error (paths are still checked by Gradio first).
        box.submit(self.chat_turn, [box, visit], api_name="chat", preprocess=False, **turn)
        chatbot.option_select(self.follow_up, [visit], api_visibility="private", **turn)
        chatbot.clear(self.clear, [visit], outputs, api_visibility="private")
        if examples is not None:
            examples.click(self.run_example, [examples, visit], api_visibility="private", **turn)
        # preprocess=False here and on the settings: Gradio's own check of a dropdown or slider value answers a
        # hostile one by quoting it whole, as HTML; the handlers check values themselves and quote them briefly.
        picker.input(self.pick_model, [picker, visit], api_visibility="private", preprocess=False, **turn)
        load.click(self.upload_model, [model_file, labels_file, visit], api_visibility="private", preprocess=False,
                   **turn)
        hub_load.click(self.load_hub, [hub_id, visit], api_visibility="private", **turn)
        hub_id.submit(self.load_hub, [hub_id, visit], api_visibility="private", **turn)
        fetch.click(self.region_canvas, [visit], [editor], api_visibility="private", queue=False)
        check.click(self.check_region, [editor, visit], api_visibility="private", preprocess=False, **turn)
        for control in settings:
            control.input(self.change_setting, [visit, *settings], [visit], api_visibility="private",
                          queue=False, show_progress="hidden", trigger_mode="always_last", preprocess=False)

    def _settings(self) -> list[gr.components.Component]:
        start = Settings()
        return [
            gr.Slider(0.0, 1.0, value=start.opacity, step=0.05, label="Overlay opacity"),
            gr.Dropdown(list(COLORMAPS), value=start.colormap, label="Colormap"),
            gr.Slider(0.05, 1.0, value=start.threshold, step=0.05, label="Localization threshold",
                      info="Fraction of the map's peak that counts as the region"),
            gr.Slider(1, MAX_TOP_K, value=start.top_k, step=1, label="Top classes listed"),
            gr.Dropdown([(render("method_auto").strip(), AUTO), *((METHODS[key].display_name, key) for key in METHODS)],
                        value=start.method or AUTO,
                        label="CAM method"),
        ]

    def _examples(self) -> gr.Dataset | None:
        if not self.examples:
            return None
        return gr.Dataset(
            label="Examples (click one)", components=["image", "textbox", "textbox", "textbox"],
            headers=["Image", "Question", "Model", "What it shows"], type="index", layout="table",
            samples=[[e.image, e.question, e.model or self.default_name, e.caption] for e in self.examples])

    def _audit_tab(self, visit: gr.State) -> None:
        gr.Markdown(render("audit_intro", max_images=self.limits.audit_images))
        with gr.Row():
            with gr.Column():
                archive = gr.File(label="Validation set (.zip)", file_types=[".zip"])
                model = gr.Dropdown([*self.builtins, (render("audit_current_model"), CURRENT_MODEL)],
                                    value=self.default_name, label="Model")
                method = gr.Dropdown([(render("method_auto").strip(), AUTO),
                                      *((METHODS[key].display_name, key) for key in METHODS)], value=AUTO,
                                     label="CAM method")
                run = gr.Button("Run the audit", variant="primary")
            with gr.Column():
                summary = gr.Markdown()
                files = gr.File(label="report.html and results.jsonl", file_count="multiple", interactive=False)
        # One audit at a time, beside the chat's workers' queue: it holds its worker for as long as it runs.
        run.click(self.audit, [archive, model, method, visit], [summary, files], api_name="audit", preprocess=False,
                  concurrency_id="audit", concurrency_limit=1)

    def _explain_tab(self) -> None:
        with gr.Row():
            with gr.Column():
                # A file, not gr.Image: the engine reads DICOM too, which a browser cannot preview.
                image = gr.File(label="Image (PNG, JPEG, TIFF, ... or DICOM)", file_types=["image", ".dcm"])
                question = gr.Textbox(value="Why?", label="Question")
                model = gr.Dropdown([n for _label, n in self.builtins], value=self.default_name, label="Model")
                expected = gr.Textbox("", label="Expected region (optional)", placeholder="x, y, w, h or lower left")
                ask = gr.Button("Ask", variant="primary")
            with gr.Column():
                answer = gr.Markdown(label="Answer")
                overlay = gr.Image(label="Overlay", format="png", interactive=False)
                facts = gr.JSON(label="Result")
        # preprocess=False: the engine decodes the upload itself and answers bad files with a clear message.
        ask.click(self.explain, [image, question, model, expected], [answer, overlay, facts], api_name="explain",
                  preprocess=False, concurrency_id="model", concurrency_limit=CONCURRENCY)


def main() -> None:
    """Serve the app; once it answers, load the demo models and trace more layers in the background."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    chat_app = ChatApp()
    demo = chat_app.launch(prevent_thread_lock=True)
    chat_app.preload()  # after start-up, so it does not delay it; the first example click is then fast too
    demo.block_thread()


if __name__ == "__main__":
    main()
