// The splatcast web client: fetch the scene, connect, steer the orbit camera, send poses, show
// the readout; "Enter VR" on headsets, a side-by-side stereo preview anywhere. Query parameters:
// `avatar` (an avatar id; default: the server's), `token` (a viewer token, when the server
// requires one), `reproject` (in VR: plane, rotation or none; see xr.js), `ice=relay` (media only
// through the server's TURN relay: how to check a TURN deployment).

import { ServerError, connect, requestJSON, videoStats } from "./connection.js";
import { FrameLog, percentile } from "./frames.js";
import { yawThenTranslate } from "./mat4.js";
import { OrbitCamera, attachOrbitControls } from "./orbit.js";
import { Overlay, formatMs } from "./overlay.js";
import { PoseStream, parseFrameMessage, streamSize } from "./pose.js";
import { ImmersiveViewer, REPROJECTIONS, immersiveVrSupported } from "./xr.js";

const READOUT_MS = 500;
const CONNECT_TIMEOUT_MS = 10000; // ICE pairs on a LAN or through TURN in well under a second
const DEG = Math.PI / 180;

const params = new URLSearchParams(location.search);
const reprojection = REPROJECTIONS.includes(params.get("reproject")) ? params.get("reproject") : REPROJECTIONS[0];
const stage = document.getElementById("stage");
const video = document.getElementById("video");
const enterVr = document.getElementById("enter-vr");
const stereoPreview = document.getElementById("stereo-preview");
const overlay = new Overlay(document.getElementById("overlay"), start);

let scene = null;
let camera = null; // kept across reconnects, so a retry keeps the view
let link = null; // the live connection: {pc, channel, poses, frames}
let immersive = null; // the ImmersiveViewer while a VR session runs
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

// The pose to send now, within the server's default pixel budget per frame (what it was
// configured to stream at; a stereo pair shares it): in VR the headset's eyes; in the stereo
// preview two eyes of the orbit camera, each half the stage; else one view of the orbit camera at
// the size the stage shows.
function currentPose() {
  const maxPixels = scene.width * scene.height;
  if (immersive?.views) return immersive.pose(maxPixels / immersive.views.length);
  if (stereoPreview.checked) {
    const [width, height] = streamSize(stage.clientWidth / 2, stage.clientHeight, devicePixelRatio, maxPixels / 2);
    return { width, height, views: camera.eyeViews(width / height) };
  }
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
    scene = await requestJSON(extra.avatar ? `scene?avatar=${encodeURIComponent(extra.avatar)}` : "scene");
    if (camera === null) {
      camera = new OrbitCamera({ target: scene.centre, radius: scene.radius });
      attachOrbitControls(stage, camera, () => link?.poses.changed());
    }
    const { iceServers } = await requestJSON("ice", extra);
    const iceTransportPolicy = params.get("ice") === "relay" ? "relay" : "all";
    const { pc, channel } = await connect("offer", video, extra, { iceServers, iceTransportPolicy });
    const current = { pc, channel, poses: new PoseStream(channel, currentPose), frames: new FrameLog() };
    channel.addEventListener("message", (event) => {
      const message = parseFrameMessage(event.data);
      const late = message && current.frames.onMessage(message, performance.now());
      const pose = late && current.poses.sentPose(late.seq);
      if (pose) immersive?.framePaired(late.seq, pose.views);
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
    // With no candidate pair that works (a relay refused, a firewall) ICE may wait without ever
    // failing: say so rather than show a blank stage.
    setTimeout(() => {
      if (link === current && pc.connectionState !== "connected") fail(`no route to the server: ICE did not connect within ${CONNECT_TIMEOUT_MS / 1000} s`);
    }, CONNECT_TIMEOUT_MS);
  } catch (e) {
    fail(e instanceof ServerError ? `server: ${e.message}` : `cannot connect: ${e.message}`);
  }
}

// Each presented frame is paired with the pose it shows; in VR that pose is what it is reprojected from.
function watchPresentedFrames() {
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
  const onFrame = (_now, metadata) => {
    const message = link?.frames.onPresented(metadata.rtpTimestamp, metadata.presentationTime) ?? null;
    const pose = message && link.poses.sentPose(message.seq);
    immersive?.framePresented(pose ? message.seq : 0, pose?.views ?? null);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function viewChanged() {
  link?.frames.restartLatency();
  link?.poses.changed();
}

// The VR session starts where the flat view's camera is, turned as it was, level.
async function startImmersive() {
  if (camera === null) return; // no scene yet: nowhere to place the viewer
  enterVr.disabled = true;
  try {
    immersive = await ImmersiveViewer.start({
      video,
      placement: yawThenTranslate(camera.azimuthDeg * DEG, camera.eye),
      avatarCentre: scene.centre,
      mode: reprojection,
      onViews: () => link?.poses.send(),
      onEnd: () => {
        immersive = null;
        enterVr.textContent = "Enter VR";
        viewChanged();
      },
    });
    enterVr.textContent = "Exit VR";
    link?.frames.restartLatency();
  } catch (e) {
    fail(`cannot enter VR: ${e.message}`);
  } finally {
    enterVr.disabled = false;
  }
}

async function offerImmersive() {
  if (!(await immersiveVrSupported())) return;
  enterVr.hidden = false;
  enterVr.addEventListener("click", () => (immersive ? immersive.end() : startImmersive()));
}

async function snapshot() {
  const decoded = link ? await videoStats(link.pc) : null;
  const frames = link?.frames;
  const latencies = frames?.poseToPresentedSamples ?? [];
  return {
    error,
    mode: immersive ? "vr" : stereoPreview.checked ? "stereo preview" : "mono",
    connectionState: link?.pc.connectionState ?? "closed",
    channelState: link?.channel.readyState ?? "closed",
    route: decoded?.route ?? null,
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
    poseToPresentedP50: percentile(latencies, 0.5),
    poseToPresentedP95: percentile(latencies, 0.95),
    poseToPresentedCount: latencies.length,
    serverMs: frames ? { ...frames.serverMs } : null,
    xr: immersive && {
      frames: immersive.xrFrames,
      reprojectedFrames: immersive.reprojectedFrames,
      renderedSeq: immersive.renderedSeq,
      reprojection: immersive.mode,
    },
    camera: camera && { azimuthDeg: camera.azimuthDeg, elevationDeg: camera.elevationDeg, radius: camera.radius, target: [...camera.target] },
  };
}

async function refreshReadout() {
  if (link === null) return;
  const s = await snapshot();
  const ms = s.serverMs;
  overlay.update([
    ["connection", s.route ? `${s.connectionState} (${s.route})` : s.connectionState],
    ["view", s.mode === "vr" ? `VR, ${s.xr.reprojection} reprojection` : s.mode],
    ["codec", s.codec ?? "–"],
    ["stream", s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : "–"],
    ["video", `${s.fps.toFixed(1)} fps`],
    ["pose → frame", formatMs(s.poseToMessageMs)],
    ["pose → shown", formatMs(s.poseToPresentedMs)],
    ["pose → shown p95", formatMs(s.poseToPresentedP95)],
    ["render", formatMs(ms.render)],
    ["convert", formatMs(ms.convert)],
    ["encode", formatMs(ms.encode)],
    ["pose seq", `${s.posesSent} sent, ${s.newestFrameSeq} rendered`],
  ]);
}

// Read-only hooks for tests and debugging in the console: `await splatcast.stats()`, and in VR
// `await splatcast.captureXRFrame()` (what each eye shows, see ImmersiveViewer.capture).
window.splatcast = Object.freeze({
  stats: snapshot,
  captureXRFrame: () => (immersive ? immersive.capture() : Promise.reject(new Error("no VR session"))),
});
window.addEventListener("resize", () => link?.poses.changed());
stereoPreview.addEventListener("change", viewChanged);
window.addEventListener("pagehide", stop); // free the server's session now, not at its idle timeout
setInterval(refreshReadout, READOUT_MS);
watchPresentedFrames();
offerImmersive();
start();
