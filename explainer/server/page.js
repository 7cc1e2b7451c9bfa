() => {
  // A new answer opens at its own first line: the chat shows the start of the newest reply (long replies read
  // downward) instead of Gradio's jump to the end, and the conversation is brought into view (after an example
  // click the page would stay at the examples). Pictures that finish loading above it move it down again, so it
  // is kept in place until the reader scrolls.
  let shown = null;
  let readerScrolled = false;
  const newestReply = (chat) => {
    const rows = [...chat.querySelectorAll(".message-row, .bot-row, .user-row")];
    const lastUser = rows.map((row) => row.matches(".user-row")).lastIndexOf(true);
    return rows.slice(lastUser + 1).find((row) => row.matches(".bot-row")) || null;
  };
  const show = () => shown && shown.isConnected && shown.scrollIntoView({ block: "start", behavior: "instant" });
  const follow = () => {
    const chat = document.querySelector("#chatbot");
    const reply = chat && newestReply(chat);
    if (!reply || reply === shown) return;
    shown = reply;
    readerScrolled = false;
    show();
  };
  new MutationObserver(follow).observe(document.body, { childList: true, subtree: true });
  document.addEventListener("load", (event) => {
    if (!readerScrolled && event.target.tagName === "IMG" && event.target.closest("#chatbot")) show();
  }, true);
  for (const name of ["wheel", "touchmove", "keydown"]) {
    document.addEventListener(name, () => { readerScrolled = true; }, { passive: true });
  }
  window.scrollTo(0, 0);
}
