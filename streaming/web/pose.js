// Pose protocol v1 (see the README): what the client sends on the "pose" data channel, and the
// frame messages the server sends back on it.

export const PROTOCOL_VERSION = 1;
const HEARTBEAT_MS = 100; // the channel is lossy: a steady re-send repairs a lost pose
const POSES_KEPT = 256; // sent poses remembered by seq: seconds of poses at a headset's 90 Hz

// One pose message. `views` lists {matrix, projection} per view (one: mono, two: a stereo pair),
// both column-major OpenGL; `width` x `height` is the size wanted per view, in pixels; `t` is
// this client's performance.now() in ms, echoed back in the frame messages.
export function poseMessage(seq, t, width, height, views) {
  return JSON.stringify({
    v: PROTOCOL_VERSION,
    type: "pose",
    seq,
    t,
    width,
    height,
    views: views.map(({ matrix, projection }) => ({ matrix: Array.from(matrix), projection: Array.from(projection) })),
  });
}

// A frame message as an object, or null for anything else on the channel.
export function parseFrameMessage(data) {
  if (typeof data !== "string") return null;
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    return null;
  }
  if (message?.type !== "frame" || !Number.isInteger(message.seq) || !Number.isFinite(message.t)) return null;
  return message;
}

// The stream size to ask for: the element's size in device pixels, scaled down (keeping the
// aspect) to at most `maxPixels`, in even numbers (the server encodes 4:2:0).
export function streamSize(cssWidth, cssHeight, devicePixelRatio, maxPixels) {
  const width = Math.max(16, cssWidth * devicePixelRatio);
  const height = Math.max(16, cssHeight * devicePixelRatio);
  const scale = Math.min(1, Math.sqrt(maxPixels / (width * height)));
  const even = (x) => Math.max(16, 2 * Math.round((x * scale) / 2));
  return [even(width), even(height)];
}

// Sends poses on `channel`: once per animation frame after `changed()`, whenever `send()` is
// called (an XR session sends one per XR frame), and every HEARTBEAT_MS regardless.
// `currentPose()` returns {width, height, views} at send time; seq grows by one per message sent.
// The last poses sent are kept, so a frame naming its seq can be drawn knowing its views.
export class PoseStream {
  constructor(channel, currentPose) {
    this.channel = channel;
    this.currentPose = currentPose;
    this.seq = 0;
    this.lastSentAt = -Infinity;
    this._sent = new Map(); // seq -> {width, height, views}
    this._scheduled = false;
    this._heartbeat = setInterval(() => {
      if (performance.now() - this.lastSentAt >= HEARTBEAT_MS * 0.9) this.send();
    }, HEARTBEAT_MS);
    channel.addEventListener("open", () => this.send());
  }

  changed() {
    if (this._scheduled) return;
    this._scheduled = true;
    requestAnimationFrame(() => {
      this._scheduled = false;
      this.send();
    });
  }

  send() {
    if (this.channel.readyState !== "open") return;
    const pose = this.currentPose();
    this.seq += 1;
    this.lastSentAt = performance.now();
    this.channel.send(poseMessage(this.seq, this.lastSentAt, pose.width, pose.height, pose.views));
    this._sent.set(this.seq, pose);
    if (this._sent.size > POSES_KEPT) this._sent.delete(this._sent.keys().next().value);
  }

  // The pose sent with `seq`, or undefined when it is too old to be remembered.
  sentPose(seq) {
    return this._sent.get(seq);
  }

  stop() {
    clearInterval(this._heartbeat);
  }
}
