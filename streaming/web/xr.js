// Immersive VR over WebXR: a session on a WebGL2 XR layer that, every XR frame, hands the headset's
// eye views over to be sent as a stereo pose, and draws the newest presented video frame into each
// eye reprojected (reproject.js) from the views it was rendered for to the views of this XR frame,
// so frames that arrive late are drawn where the head is now instead of swimming with it.
//
// XR views live in the session's "local" space (origin where the head was when it began);
// `placement`, a column-major rigid transform, puts that space into the avatar's world, so the
// viewer starts where the flat view's camera was.

import { multiply } from "./mat4.js";
import { streamSize } from "./pose.js";
import { displayToRender, facingPlane } from "./reproject.js";
import { TimewarpCompositor } from "./timewarp.js";

// How a frame is moved to the display pose: undoing rotation and the eyes' translation for content
// at the avatar's depth ("plane", the default), rotation only, or not at all.
export const REPROJECTIONS = ["plane", "rotation", "none"];

export async function immersiveVrSupported() {
  if (!navigator.xr) return false;
  try {
    return await navigator.xr.isSessionSupported("immersive-vr");
  } catch {
    return false; // e.g. a permissions policy forbids WebXR here
  }
}

// The display-to-render homography of each displayed eye under `mode`, for a frame rendered from
// `rendered` (null for an eye the frame has no view for: it is left blank).
export function eyeHomographies(mode, rendered, displayed, avatarCentre) {
  if (rendered.length !== displayed.length) return displayed.map(() => null);
  return displayed.map((view, i) => {
    if (mode === "none") return displayToRender(rendered[i], { matrix: rendered[i].matrix, projection: view.projection });
    return displayToRender(rendered[i], view, mode === "plane" ? facingPlane(view, avatarCentre) : null);
  });
}

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

const poseViews = (views) => views.map(({ matrix, projection }) => ({ matrix, projection }));

export class ImmersiveViewer {
  // Start an immersive-vr session (from a user gesture: the browser insists). `onViews()` runs
  // once per XR frame, after `views` is updated; `onEnd()` when the session ends.
  static async start({ video, placement, avatarCentre, mode, onViews, onEnd }) {
    const session = await navigator.xr.requestSession("immersive-vr");
    try {
      const gl = document.createElement("canvas").getContext("webgl2", { xrCompatible: true, alpha: false, depth: false, antialias: false });
      if (gl === null) throw new Error("WebGL2 is not available");
      session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl, { alpha: false, depth: false, antialias: false }) });
      const space = await session.requestReferenceSpace("local");
      return new ImmersiveViewer(session, gl, space, { video, placement, avatarCentre, mode, onViews, onEnd });
    } catch (error) {
      await session.end();
      throw error;
    }
  }

  constructor(session, gl, space, { video, placement, avatarCentre, mode, onViews, onEnd }) {
    this.session = session;
    this.gl = gl;
    this.space = space;
    this.video = video;
    this.placement = placement;
    this.avatarCentre = avatarCentre;
    this.mode = mode;
    this.onViews = onViews;
    this.compositor = new TimewarpCompositor(gl);
    this.views = null; // this XR frame's eyes: [{matrix, projection, viewport}] in the avatar's world
    this.renderedSeq = 0; // the pose the drawn video frame shows (0: not known)
    this.renderedViews = null;
    this.xrFrames = 0;
    this.reprojectedFrames = 0; // XR frames drawn knowing the frame's own views
    // Without requestVideoFrameCallback no frame is ever paired: upload every XR frame, unwarped.
    this._uploadEveryFrame = !("requestVideoFrameCallback" in HTMLVideoElement.prototype);
    this._presented = null; // a newly presented frame, not uploaded yet: {seq, views}
    this._captures = [];
    session.addEventListener("end", onEnd);
    session.requestAnimationFrame(this._onXRFrame);
  }

  // A new video frame is being presented: the pose it shows (seq, and its sent views) or
  // seq 0 and null views when it is not known yet.
  framePresented(seq, views) {
    this._presented = { seq, views };
  }

  // The newest presented frame, whose pose was not known when it was presented, shows pose `seq`
  // after all (its frame message came late): reproject it from `views`.
  framePaired(seq, views) {
    if (this._presented !== null) {
      this._presented = { seq, views };
    } else {
      this.renderedSeq = seq;
      this.renderedViews = views;
    }
  }

  // This XR frame's pose for the pose protocol: each eye's viewport size, scaled to at most
  // `maxPixelsPerEye` pixels.
  pose(maxPixelsPerEye) {
    const { width, height } = this.views[0].viewport;
    const [w, h] = streamSize(width, height, 1, maxPixelsPerEye);
    return { width: w, height: h, views: poseViews(this.views) };
  }

  // Resolves at the next drawn XR frame with what each eye shows under every reprojection mode
  // ({mode: [per eye, RGBA rows bottom-up, base64]}) and the views involved; for tests and debugging.
  capture() {
    return new Promise((resolve) => this._captures.push(resolve));
  }

  end() {
    return this.session.end();
  }

  _onXRFrame = (_time, frame) => {
    const session = frame.session;
    session.requestAnimationFrame(this._onXRFrame);
    const viewer = frame.getViewerPose(this.space);
    if (!viewer) return; // tracking lost: the compositor keeps showing the last frame
    const layer = session.renderState.baseLayer;
    this.views = viewer.views.map((view) => {
      const { x, y, width, height } = layer.getViewport(view);
      return { matrix: multiply(this.placement, view.transform.matrix), projection: Array.from(view.projectionMatrix), viewport: { x, y, width, height } };
    });
    this.xrFrames += 1;
    this.onViews();
    const presented = this._uploadEveryFrame ? { seq: 0, views: null } : this._presented;
    if (presented !== null && this.compositor.upload(this.video)) {
      this.renderedSeq = presented.seq;
      this.renderedViews = presented.views;
      this._presented = null;
    }
    if (this._captures.length > 0) this._capture(layer.framebuffer);
    if (this.renderedViews !== null) this.reprojectedFrames += 1;
    this._draw(layer.framebuffer, this.mode);
  };

  _draw(framebuffer, mode) {
    // A frame whose pose is not known is drawn as if rendered for this one: unwarped.
    const rendered = this.renderedViews ?? this.views;
    const homographies = eyeHomographies(mode, rendered, this.views, this.avatarCentre);
    this.compositor.draw(framebuffer, this.views.map(({ viewport }, i) => ({ viewport, homography: homographies[i] })));
  }

  _capture(framebuffer) {
    const gl = this.gl;
    const eyes = {};
    for (const mode of REPROJECTIONS) {
      this._draw(framebuffer, mode);
      eyes[mode] = this.views.map(({ viewport: v }) => {
        const pixels = new Uint8Array(v.width * v.height * 4);
        gl.readPixels(v.x, v.y, v.width, v.height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
        return base64(pixels);
      });
    }
    const { width, height } = this.views[0].viewport;
    const result = {
      width,
      height,
      displayed: poseViews(this.views),
      renderedSeq: this.renderedSeq,
      rendered: this.renderedViews,
      eyes,
    };
    for (const resolve of this._captures.splice(0)) resolve(result);
  }
}
