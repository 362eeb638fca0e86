// The splatcast web client: fetch the scene, connect, steer the orbit camera, send poses, show
// the readout. Query parameters: `avatar` (an avatar id; default: the server's), `token` (a
// viewer token, when the server requires one).

import { ServerError, connect, requestJSON, videoStats } from "./connection.js";
import { FrameLog } from "./frames.js";
import { OrbitCamera, attachOrbitControls } from "./orbit.js";
import { Overlay, formatMs } from "./overlay.js";
import { PoseStream, parseFrameMessage, streamSize } from "./pose.js";

const READOUT_MS = 500;

const params = new URLSearchParams(location.search);
const stage = document.getElementById("stage");
const video = document.getElementById("video");
const overlay = new Overlay(document.getElementById("overlay"), start);

let camera = null; // kept across reconnects, so a retry keeps the view
let link = null; // the live connection: {pc, channel, poses, frames}
let error = null;

function fail(message) {
  error = message;
  overlay.showError(message);
}

function stop() {
  if (link === null) return;
  link.poses.stop();
  link.pc.close();
  link = null;
}

// The pose to send now: one mono view of the orbit camera, at the size the stage shows, within
// the server's default pixel budget (what it was configured to stream at).
function currentPose(scene) {
  const maxPixels = scene.width * scene.height;
  const [width, height] = streamSize(stage.clientWidth, stage.clientHeight, devicePixelRatio, maxPixels);
  return { width, height, views: [{ matrix: camera.cameraToWorld(), projection: camera.projection(width / height) }] };
}

async function start() {
  stop();
  overlay.clearError();
  error = null;
  const extra = {};
  for (const key of ["avatar", "token"]) if (params.has(key)) extra[key] = params.get(key);
  try {
    const scene = await requestJSON(extra.avatar ? `scene?avatar=${encodeURIComponent(extra.avatar)}` : "scene");
    if (camera === null) {
      camera = new OrbitCamera({ target: scene.centre, radius: scene.radius });
      attachOrbitControls(stage, camera, () => link?.poses.changed());
    }
    const { pc, channel } = await connect("offer", video, extra);
    const current = { pc, channel, poses: new PoseStream(channel, () => currentPose(scene)), frames: new FrameLog() };
    channel.addEventListener("message", (event) => {
      const message = parseFrameMessage(event.data);
      if (message) current.frames.onMessage(message, performance.now());
    });
    channel.addEventListener("close", () => {
      if (link === current) fail("the server ended the session");
    });
    pc.addEventListener("connectionstatechange", () => {
      if (link === current && (pc.connectionState === "failed" || pc.connectionState === "closed")) {
        fail(`connection ${pc.connectionState}`);
      }
    });
    link = current;
  } catch (e) {
    fail(e instanceof ServerError ? `server: ${e.message}` : `cannot connect: ${e.message}`);
  }
}

function watchPresentedFrames() {
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
  const onFrame = (_now, metadata) => {
    link?.frames.onPresented(metadata.rtpTimestamp, metadata.presentationTime);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

async function snapshot() {
  const decoded = link ? await videoStats(link.pc) : null;
  const frames = link?.frames;
  return {
    error,
    connectionState: link?.pc.connectionState ?? "closed",
    channelState: link?.channel.readyState ?? "closed",
    codec: decoded?.codec ?? null,
    framesDecoded: decoded?.framesDecoded ?? 0,
    frameWidth: decoded?.frameWidth ?? 0,
    frameHeight: decoded?.frameHeight ?? 0,
    // Presented frames where requestVideoFrameCallback exists, else the decoder's rate.
    fps: frames && frames.presentedFrames > 0 ? frames.presentedFps(performance.now()) : decoded?.framesPerSecond ?? 0,
    posesSent: link?.poses.seq ?? 0,
    frameMessages: frames?.messages ?? 0,
    newestFrameSeq: frames?.newestSeq ?? 0,
    presentedFrames: frames?.presentedFrames ?? 0,
    presentedSeq: frames?.presentedSeq ?? 0,
    poseToMessageMs: frames?.poseToMessageMs ?? null,
    poseToPresentedMs: frames?.poseToPresentedMs ?? null,
    serverMs: frames ? { ...frames.serverMs } : null,
    camera: camera && { azimuthDeg: camera.azimuthDeg, elevationDeg: camera.elevationDeg, radius: camera.radius, target: [...camera.target] },
  };
}

async function refreshReadout() {
  if (link === null) return;
  const s = await snapshot();
  const ms = s.serverMs;
  overlay.update([
    ["connection", s.connectionState],
    ["codec", s.codec ?? "–"],
    ["stream", s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : "–"],
    ["video", `${s.fps.toFixed(1)} fps`],
    ["pose → frame", formatMs(s.poseToMessageMs)],
    ["pose → shown", formatMs(s.poseToPresentedMs)],
    ["render", formatMs(ms.render)],
    ["convert", formatMs(ms.convert)],
    ["encode", formatMs(ms.encode)],
    ["pose seq", `${s.posesSent} sent, ${s.newestFrameSeq} rendered`],
  ]);
}

// Read-only hook for tests and debugging in the console: `await splatcast.stats()`.
window.splatcast = Object.freeze({ stats: snapshot });
window.addEventListener("resize", () => link?.poses.changed());
window.addEventListener("pagehide", stop); // free the server's session now, not at its idle timeout
setInterval(refreshReadout, READOUT_MS);
watchPresentedFrames();
start();
