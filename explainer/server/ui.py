"""Grad-CAM Chat's page: the Gradio components and events around :class:`~explainer.server.core.ChatServer`.

Wiring only. Every event delegates to the server's logic; this module adds the components, turns refusals into
pop-ups (no exception text, path or traceback reaches a visitor) and starts the server. Public endpoints:
``/chat`` (one chat turn), ``/explain`` (one image and question in: the Markdown answer, the overlay and the facts
as JSON; also the MCP tool ``explain``) and ``/audit`` (a zip of a validation set in: a report and the results out).

A ``gr.Blocks`` with ``gr.Chatbot`` + ``gr.MultimodalTextbox`` rather than ``gr.ChatInterface``: the model picker,
the model upload and the examples all speak in the same conversation, and the conversation lives on the server
(so ``/chat`` takes just the new message, and an API client keeps its conversation like a browser does).
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.exceptions import InvalidPathError
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from pydantic import ValidationError
from starlette.middleware import Middleware

from explainer import config
from explainer.chat import AUTO, MAX_TOP_K, Settings, method_choices, segment_choices
from explainer.demo import EXAMPLES_DIR
from explainer.errors import ExplainerError
from explainer.prose import escape_markdown, render
from explainer.render import COLORMAPS
from explainer.server.conversation import Visit, picture_file, popup
from explainer.server.core import CURRENT_MODEL, FAILED, SETTING_NAMES, ChatServer
from explainer.server.gradio_internals import GradioQueue, keep_mcp_tools, wrap_preprocess
from explainer.server.serving import McpRequestLimit, QueueGuard, forwarded_allow_ips
from explainer.server.uploads import REFUSED, log_refusal

logger = logging.getLogger("gradcam_chat")

TITLE = "Grad-CAM Chat"
#: Model workers: one per CPU of a Hugging Face CPU Space; the rest wait in order.
CONCURRENCY = 2
QUEUE_SIZE = 64
MAX_FILE_SIZE = "200mb"
#: The MCP library's limit on one request's body: an image sent to the MCP tool as a data URL takes 4/3 of its size.
MCP_REQUEST_LIMIT = DEFAULT_MAX_REQUEST_BODY_SIZE
#: The answer to a payload that is not in the form an event takes (sent by hand, not by the page).
MALFORMED = "That request's data is not in the form this app takes. Please use the page or the documented API."
#: The brush colour of "Where should it look?" (also the outline of the visitor's region in answers).
REGION_COLOUR = "#ff00ff"
#: Temporary files (uploads, answer pictures) live this long (seconds), swept this often: as long as a session.
CACHE_AGE = 3600
CACHE_SWEEP = 600
#: The page's style and script (scrolling to the start of each new answer), beside this module.
CSS = (Path(__file__).with_name("page.css")).read_text(encoding="utf-8")
JS = (Path(__file__).with_name("page.js")).read_text(encoding="utf-8")
PLACEHOLDER = (
    "### Ask a classifier what it looks at\n"
    "Upload an image (📎) and ask **why?**, **what is it?**, **how confident is it?**, **show the region**, "
    "**does it hold up?**, or pick an example below."
)


def launch_options() -> dict[str, Any]:
    """Keyword arguments of ``launch()`` shared by ``gradcam-chat serve``, the tests and the benchmark."""
    # show_error=False: an unexpected exception's text (paths, modules) never reaches the page; every event below
    # catches its own errors and raises gr.Error with a plain message instead.
    # mcp_server=True: the /explain event is also an MCP tool (Gradio's MCP server at /gradio_api/mcp/).
    return {"max_file_size": MAX_FILE_SIZE, "allowed_paths": [str(EXAMPLES_DIR)], "show_error": False, "css": CSS,
            "js": JS, "mcp_server": True}


def refusal(text: str, title: str = "Error") -> gr.Error:
    """The error pop-up for ``text`` (escaped and cut, see :func:`~explainer.server.conversation.popup`), without
    Gradio's traceback on the console: a user error is one line at most, an unforeseen one is logged once by
    :func:`event_boundary`."""
    error = gr.Error(popup(text), title=title)
    error.print_exception = False
    return error


def refuse_quietly(demo: gr.Blocks) -> None:
    """Gradio's own refusals of a payload, before any event runs, as one log line each instead of a traceback.

    Gradio checks file payloads itself (a file that was not uploaded, a file payload without its ``meta`` marker)
    and prints a traceback for every refusal; a probe of a thousand paths would be a megabyte of log. A file refused
    by Gradio gets the upload gate's fixed message (:data:`~explainer.server.uploads.REFUSED`) and its one line,
    another malformed payload :data:`MALFORMED`, and a component's own refusal stays as it is, without traceback.
    """
    def wrapper(preprocess: Callable) -> Callable:
        async def preprocess_data(*args: Any, **kwargs: Any) -> Any:
            try:
                return await preprocess(*args, **kwargs)
            except gr.Error as err:
                err.print_exception = False
                raise
            except InvalidPathError as err:
                log_refusal("not uploaded, refused by Gradio", str(err))
                raise refusal(REFUSED) from None
            except ValidationError as err:
                files = [problem for problem in err.errors() if "gradio.FileData" in str(problem.get("msg"))]
                if files:
                    log_refusal("no Gradio file marker", files[0].get("input"))
                    raise refusal(REFUSED) from None
                logger.warning("refused a malformed payload: %s", repr(err.errors()[:1])[:120])
                raise refusal(MALFORMED) from None
        return preprocess_data

    wrap_preprocess(demo, wrapper)


def event_boundary(fn: Callable) -> Callable:
    """Wrap an event: a user error becomes a pop-up with its plain message, anything else is logged in full on the
    server and shown as :data:`~explainer.server.core.FAILED`."""

    def translate(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            err.print_exception = False
            return err
        if isinstance(err, ExplainerError):
            return refusal(str(err), getattr(err, "title", "Error"))
        logger.error("event %s failed", fn.__name__, exc_info=err)
        return refusal(FAILED)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator:
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise translate(err) from None
        return generator

    @functools.wraps(fn)
    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise translate(err) from None
    return function


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _images_progress(progress: gr.Progress) -> Callable[[int, int, str], None]:
    """The server's ``progress(done, total, description)`` as Gradio's progress bar, counted in images."""
    def step(done: int, total: int, desc: str) -> None:
        progress((done, total), desc=desc, unit="images")

    return step


class ChatApp(ChatServer):
    """The page: builds the Blocks on :class:`~explainer.server.core.ChatServer` and serves it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.upload_folder = gr.utils.get_upload_folder()
        self.queue: GradioQueue | None = None
        self.gone = lambda session: self.queue is not None and not self.queue.listening(session)

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
        keep_mcp_tools(demo, {"/explain"})  # the chat's turn needs a conversation an assistant lacks
        return demo

    def outputs(self, visit: Visit, busy: bool = False) -> tuple:
        """Values of the chat's outputs: the conversation, the input box, the model picker, the settings, the state."""
        box = gr.MultimodalTextbox(value=None, interactive=not busy)
        picker = gr.Dropdown(choices=visit.menu.choices(), value=visit.menu.key_of(visit.chat.model))
        settings = [getattr(visit.chat.settings, name) for name in SETTING_NAMES]
        settings[SETTING_NAMES.index("method")] = visit.chat.settings.method or AUTO  # None: the model's default
        return visit.messages, box, picker, *settings, visit

    def picture(self, image: np.ndarray, caption: str) -> gr.Image:
        """A chat picture: written once as a file, so later turns resend its path instead of re-encoding pixels."""
        path = picture_file(image, self.upload_folder)
        return gr.Image(value=path, label=caption, alt_text=caption, show_label=True,
                        format="png" if path.endswith(".png") else "jpeg", buttons=["download", "fullscreen"])

    def warn(self, text: str) -> None:
        gr.Warning(popup(text))

    def _end_visit_callback(self) -> Callable[[Visit | None], None]:
        # A plain function, not the bound method: Gradio deep-copies components per request, and a deep copy of a
        # bound method copies its object (this app, with every loaded model: 1.3 s per page load).
        def end_visit(visit: Visit | None) -> None:
            self.end_visit(visit)

        return end_visit

    # ----------------------------------------------------------------- events (Gradio reads their signatures)

    @event_boundary
    def chat_turn(self, message: Any, visit: Visit | None, request: gr.Request = None) -> Iterator[tuple]:
        yield from self.chat(message, visit, _session(request))

    @event_boundary
    def region_canvas(self, visit: Visit | None) -> dict:
        return self.canvas(visit)

    @event_boundary
    def check_region(self, editor: Any, visit: Visit | None, request: gr.Request = None) -> Iterator[tuple]:
        yield from self.painted(editor, visit, _session(request))

    @event_boundary
    def follow_up(self, visit: Visit | None, selected: gr.SelectData, request: gr.Request = None) -> Iterator[tuple]:
        yield from self.ask(visit or self.new_visit(), str(selected.value), [], _session(request))

    @event_boundary
    def run_example(self, index: Any, visit: Visit | None, request: gr.Request = None) -> Iterator[tuple]:
        yield from self.example(index, visit, _session(request))

    @event_boundary
    def pick_model(self, key: Any, visit: Visit | None) -> tuple:
        return self.use_model(key, visit)

    @event_boundary
    def upload_model(self, model_file: Any, labels_file: Any, visit: Visit | None) -> tuple:
        return self.add_model_file(model_file, labels_file, visit)

    @event_boundary
    def load_hub(self, model_id: Any, visit: Visit | None) -> tuple:
        return self.add_hub_model(model_id, visit)

    @event_boundary
    def change_setting(self, visit: Visit | None, *values: Any) -> tuple:
        return self.settings_changed(visit, *values)

    @event_boundary
    def clear(self, visit: Visit | None) -> tuple:
        return self.restart(visit)

    @event_boundary
    def explain(self, image: str, question: str = "Why?", model_name: str = "", expected_region: str = "",
                request: gr.Request = None) -> tuple[str, np.ndarray | None, dict]:
        """Ask an image classifier about one image and see where it looks (Grad-CAM), without an LLM.

        Every number in the answer is measured: the model's prediction and probability, the Grad-CAM heatmap of
        the class asked about, the region it highlights (box, share of the image, place in words) and, when
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
        return self.explain_once(image, question, model_name, expected_region, _session(request))

    @event_boundary
    def audit(self, archive: Any, model_name: Any, method: Any, visit: Visit | None, request: gr.Request = None,
              progress: gr.Progress = gr.Progress()) -> tuple[str, list[str]]:  # noqa: B008 (Gradio reads it)
        """The Audit tab: a zip of class folders (and optional boxes.csv / masks/) in, report.html and results.jsonl
        out, with a progress bar (see :meth:`~explainer.server.core.ChatServer.audit_zip`)."""
        return self.audit_zip(archive, model_name, method, visit, _session(request), _images_progress(progress))

    @event_boundary
    def audit_sample(self, method: Any, visit: Visit | None, request: gr.Request = None,
                     progress: gr.Progress = gr.Progress()) -> tuple[str, list[str]]:  # noqa: B008 (Gradio reads it)
        return self.sample_audit(method, visit, _session(request), _images_progress(progress))

    @event_boundary
    def calibrate(self, archive: Any, visit: Visit | None, request: gr.Request = None,
                  progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008 (Gradio reads it)
        return self.calibrate_zip(archive, visit, _session(request), _images_progress(progress))

    @event_boundary
    def show_report(self, files: Any) -> str:
        return self.report_page(files)

    # ---------------------------------------------------------------------------------------------- layout

    def build(self) -> gr.Blocks:
        """The Blocks: a chat tab (model picker, own model upload, settings, examples), the audit and one question."""
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
        self.queue = GradioQueue.of(demo)
        self.guard.install(self.queue)
        refuse_quietly(demo)
        self.demo = demo
        return demo

    def _chat_tab(self, visit: gr.State) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                # autoscroll=False: page.js shows the start of each new answer instead of its end.
                chatbot = gr.Chatbot(label=TITLE, height=640, placeholder=PLACEHOLDER, feedback_options=None,
                                     buttons=["copy", "copy_all"], elem_id="chatbot", autoscroll=False)
                box = gr.MultimodalTextbox(placeholder="Upload an image and ask a question, e.g. why?",
                                           file_types=["image", ".dcm"], file_count="multiple", sources=["upload"],
                                           max_plain_text_length=20_000, show_label=False, elem_id="chat-input")
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
                                            layers=False, label="Paint here", elem_id="region-editor",
                                            brush=gr.Brush(colors=[REGION_COLOUR], color_mode="fixed",
                                                           default_size=12))
                    check = gr.Button("Is it looking here?", variant="primary", size="sm", elem_id="region-check")
                with gr.Accordion("Settings", open=False):
                    settings = self._settings()
        # Below the side panel, so that on a phone the model and the settings come before nine examples.
        examples = self._examples()

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
        for control in settings:  # the chat says what changed and redraws: a model turn like the others
            control.input(self.change_setting, [visit, *settings], api_visibility="private", preprocess=False,
                          trigger_mode="always_last", **{**turn, "show_progress": "hidden"})

    def _settings(self) -> list[gr.components.Component]:
        start = Settings()
        return [
            gr.Slider(0.0, 1.0, value=start.opacity, step=0.05, label="Overlay opacity"),
            gr.Dropdown(list(COLORMAPS), value=start.colormap, label="Colormap"),
            gr.Slider(0.05, 1.0, value=start.threshold, step=0.05, label="Localization threshold",
                      info="Fraction of the map's peak that counts as the region"),
            gr.Slider(1, MAX_TOP_K, value=start.top_k, step=1, label="Top classes listed"),
            gr.Dropdown(method_choices(), value=start.method or AUTO, label="CAM method"),
            gr.Dropdown(segment_choices(), value=start.segment, label="Segmentation",
                        info="How \"segment it\" cuts the object's mask from the map"),
        ]

    def _examples(self) -> gr.Dataset | None:
        if not self.examples:
            return None
        return gr.Dataset(
            label="Examples (click one)", components=["image", "textbox", "textbox", "textbox"], elem_id="examples",
            headers=["Image", "Question", "Model", "What it shows"], type="index", layout="table",
            samples=[[e.image, e.question, e.model or self.default_name, e.caption] for e in self.examples])

    def _audit_tab(self, visit: gr.State) -> None:
        gr.Markdown(render("audit_intro", max_images=self.limits.audit_images))
        with gr.Row():
            with gr.Column():
                archive = gr.File(label="Validation set (.zip)", file_types=[".zip"])
                model = gr.Dropdown([*self.builtins, (render("audit_current_model"), CURRENT_MODEL)],
                                    value=self.default_name, label="Model")
                method = gr.Dropdown(method_choices(), value=AUTO, label="CAM method")
                run = gr.Button("Run the audit", variant="primary")
                sample = gr.Button("Or try it on the bundled shortcut model's validation set", variant="secondary")
                calibrate = gr.Button("Calibrate the chat's model on this set", variant="secondary")
            with gr.Column():
                summary = gr.Markdown()
                files = gr.File(label="report.html and results.jsonl", file_count="multiple", interactive=False)
        report = gr.HTML()
        # One audit at a time, beside the chat's workers' queue: it holds its worker for as long as it runs. The
        # report is then shown in the page too (preprocess=False: the handler checks the paths itself).
        audit = {"outputs": [summary, files], "concurrency_id": "audit", "concurrency_limit": 1}
        run.click(self.audit, [archive, model, method, visit], api_name="audit", preprocess=False, **audit).then(
            self.show_report, [files], [report], api_visibility="private", preprocess=False, queue=False)
        sample.click(self.audit_sample, [method, visit], api_visibility="private", preprocess=False, **audit).then(
            self.show_report, [files], [report], api_visibility="private", preprocess=False, queue=False)
        calibrate.click(self.calibrate, [archive, visit], [summary], api_visibility="private", preprocess=False,
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


def main(**options: Any) -> None:
    """Serve the app (``options`` go to ``launch()``, e.g. ``server_port``); once it answers, load the demo models
    and trace more layers in the background."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config.check_all()  # a bad setting stops the server now, in one line, not a visitor's question later
        chat_app = ChatApp()
    except ExplainerError as err:
        raise SystemExit(f"error: {err}") from None
    demo = chat_app.launch(prevent_thread_lock=True, **options)
    chat_app.preload()  # after start-up, so it does not delay it; the first example click is then fast too
    demo.block_thread()
