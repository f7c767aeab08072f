// authserver console: copy to the clipboard, the only script the console needs.
"use strict";

function copyStatus(button, text) {
  const status = document.getElementById(button.dataset.copyStatus || "");
  if (status) status.textContent = text;
}

async function copyFrom(button) {
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  try {
    await navigator.clipboard.writeText(field.value);
    copyStatus(button, "Copied to the clipboard.");
  } catch (error) {
    // No clipboard access (an old browser, or a page not served over HTTPS): select it instead.
    field.focus();
    field.select();
    copyStatus(button, "Selected: press Ctrl+C (⌘C on a Mac) to copy.");
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (button) copyFrom(button);
});

document.addEventListener("focusin", (event) => {
  if (event.target.matches("input.secret")) event.target.select();
});

document.addEventListener("DOMContentLoaded", () => {
  // Move focus to the error summary after a refused form, so screen readers announce it.
  const summary = document.querySelector("[data-autofocus]");
  if (summary) summary.focus();
});
