// The heads-up readout over the video: labelled values, an error line and a reconnect button.

export function formatMs(ms) {
  return ms === null ? "–" : `${ms.toFixed(1)} ms`;
}

export class Overlay {
  constructor(root, onReconnect) {
    this.readout = root.querySelector(".readout");
    this.error = root.querySelector(".error");
    this.reconnect = root.querySelector(".reconnect");
    this.reconnect.addEventListener("click", onReconnect);
    this._values = new Map(); // label -> its <dd>
  }

  // Show `rows`, a list of [label, text]; labels keep the order of their first appearance.
  update(rows) {
    for (const [label, text] of rows) {
      let value = this._values.get(label);
      if (!value) {
        const term = document.createElement("dt");
        term.textContent = label;
        value = document.createElement("dd");
        this.readout.append(term, value);
        this._values.set(label, value);
      }
      value.textContent = text;
    }
  }

  // A problem the user should see (the server's own message where it gave one); offer a retry.
  showError(message) {
    this.error.textContent = message;
    this.error.hidden = false;
    this.reconnect.hidden = false;
  }

  clearError() {
    this.error.hidden = true;
    this.reconnect.hidden = true;
  }
}
