// Bookkeeping of the server's frame messages: which pose each video frame shows, and how long
// poses take to come back as frames.
//
// Each frame message names its pose (`seq`, and `t`: the client's clock when that pose was sent)
// and its media timestamp `pts` (90 kHz ticks, the RTP timestamp less the stream's random origin).
// A presented video frame carries its RTP timestamp (requestVideoFrameCallback metadata), so once
// the origin is known each presented frame maps to its message and so to the pose it shows.

const SMOOTHING = 0.1; // weight of the newest sample in the moving averages
const MEMORY = 256; // frame messages kept for pairing: seconds of video at 60 fps
const VOTES_TO_LOCK = 5; // presented frames agreeing on one RTP origin before it is trusted
const LATENCIES_KEPT = 512; // pose -> presented samples kept for percentiles

function smooth(average, sample) {
  return average === null ? sample : average + SMOOTHING * (sample - average);
}

// The q-quantile (0..1) of `samples`, nearest rank; null for none.
export function percentile(samples, q) {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

export class FrameLog {
  constructor() {
    this.messages = 0;
    this.newestSeq = 0; // the newest pose the server has reported rendering
    this.poseToMessageMs = null; // pose sent -> its first frame message received, smoothed
    this.poseToPresentedMs = null; // pose sent -> its first frame presented on screen, smoothed
    this.poseToPresentedSamples = []; // the same, unsmoothed: the last LATENCIES_KEPT poses
    this.serverMs = { render: null, convert: null, encode: null };
    this.presentedFrames = 0;
    this._presentedAt = []; // presentation times of the last second's frames
    this.presentedSeq = 0; // the pose shown by the newest presented frame (0: not paired yet)
    this.rtpOrigin = null;
    this._byPts = new Map();
    this._unpaired = null; // the newest presented frame, while its message has not come: {pts, presentedAt}
    this._votes = new Map();
  }

  // A frame message arrived at `now` (performance.now() ms). Returns it when it names the newest
  // presented frame, which was on screen before its message came (the video and the data channel
  // are separate streams): that frame is paired now. Else null.
  onMessage(message, now) {
    this.messages += 1;
    this.serverMs.render = smooth(this.serverMs.render, message.render_ms);
    this.serverMs.convert = smooth(this.serverMs.convert, message.convert_ms);
    this.serverMs.encode = smooth(this.serverMs.encode, message.encode_ms);
    if (message.seq > this.newestSeq) {
      this.newestSeq = message.seq;
      this.poseToMessageMs = smooth(this.poseToMessageMs, now - message.t);
    }
    if (Number.isInteger(message.pts)) {
      this._byPts.set(message.pts, message);
      if (this._byPts.size > MEMORY) this._byPts.delete(this._byPts.keys().next().value);
    }
    if (this._unpaired === null || this._unpaired.pts !== message.pts) return null;
    this._paired(message, this._unpaired.presentedAt);
    this._unpaired = null;
    return message;
  }

  // A video frame was presented (requestVideoFrameCallback): `rtpTimestamp` from its metadata,
  // `presentedAt` its presentation time (performance.now() ms). Returns its frame message or null.
  onPresented(rtpTimestamp, presentedAt) {
    this.presentedFrames += 1;
    this._presentedAt.push(presentedAt);
    while (this._presentedAt[0] < presentedAt - 1000) this._presentedAt.shift();
    if (!Number.isInteger(rtpTimestamp)) return null;
    if (this.rtpOrigin === null) this._vote(rtpTimestamp);
    if (this.rtpOrigin === null) return null;
    const pts = (rtpTimestamp - this.rtpOrigin) >>> 0;
    const message = this._byPts.get(pts);
    this._unpaired = message ? null : { pts, presentedAt };
    if (message) this._paired(message, presentedAt);
    return message ?? null;
  }

  // A presented frame and its message met: the first frame of each pose is its latency sample.
  _paired(message, presentedAt) {
    if (message.seq > this.presentedSeq) {
      this.presentedSeq = message.seq;
      this.poseToPresentedMs = smooth(this.poseToPresentedMs, presentedAt - message.t);
      this.poseToPresentedSamples.push(presentedAt - message.t);
      if (this.poseToPresentedSamples.length > LATENCIES_KEPT) this.poseToPresentedSamples.shift();
    }
  }

  // Start the latency samples afresh: the view changed (mono, stereo, VR), and so did the cost.
  restartLatency() {
    this.poseToPresentedSamples = [];
  }

  // Frames presented during the last second: the frame rate the viewer sees.
  presentedFps(now) {
    return this._presentedAt.filter((t) => t >= now - 1000).length;
  }

  // Each remembered message proposes an origin for this frame; the true one is proposed by every
  // presented frame, a wrong one only by chance.
  _vote(rtpTimestamp) {
    if (this._votes.size > 8 * MEMORY) this._votes.clear(); // no agreement yet: start over
    for (const pts of this._byPts.keys()) {
      const origin = (rtpTimestamp - pts) >>> 0;
      const votes = (this._votes.get(origin) ?? 0) + 1;
      this._votes.set(origin, votes);
      if (votes >= VOTES_TO_LOCK) {
        this.rtpOrigin = origin;
        this._votes.clear();
        return;
      }
    }
  }
}
