// The WebRTC side: one peer connection receiving the avatar's video and carrying poses.
//
// The server does not trickle ICE, so the offer is posted once gathering is complete. The ICE
// servers are the server's to give (POST /ice, TURN credentials minted for this viewer); with
// none, the peers pair their host candidates.

const ICE_GATHERING_TIMEOUT_MS = 5000;

// The server refused the offer (or the scene): `status` is the HTTP status, the message its reason.
export class ServerError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ServerError";
    this.status = status;
  }
}

// GET or POST JSON; a non-2xx answer becomes a ServerError carrying the server's {"error"} text.
export async function requestJSON(url, body) {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(url, init);
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new ServerError(response.status, answer?.error ?? `${response.status} ${response.statusText}`);
  if (answer === null) throw new ServerError(response.status, `${url}: the server's answer is not JSON`);
  return answer;
}

function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    // Some networks never finish gathering; what was found by then is usually enough.
    const timer = setTimeout(() => {
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    }, ICE_GATHERING_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

// Connect to the server at `offerUrl` and show its video in `video`. `extra` is merged into the
// offer body ({avatar, token} when given); `ice` is the RTCPeerConnection's {iceServers,
// iceTransportPolicy}. Returns {pc, channel, session}; `channel` is the unordered, unreliable
// "pose" data channel, possibly still opening.
export async function connect(offerUrl, video, extra = {}, ice = { iceServers: [] }) {
  const pc = new RTCPeerConnection(ice);
  const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
  // Play frames as soon as they decode: the stream is interactive, smoothness matters less.
  // (jitterBufferTarget is the standard, in ms; playoutDelayHint, in s, what older Chromiums read.)
  if ("jitterBufferTarget" in transceiver.receiver) transceiver.receiver.jitterBufferTarget = 0;
  if ("playoutDelayHint" in transceiver.receiver) transceiver.receiver.playoutDelayHint = 0;
  const channel = pc.createDataChannel("pose", { ordered: false, maxRetransmits: 0 });
  pc.addEventListener("track", (event) => {
    video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const answer = await requestJSON(offerUrl, { sdp: pc.localDescription.sdp, type: "offer", ...extra });
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    return { pc, channel, session: answer.session };
  } catch (error) {
    pc.close();
    throw error;
  }
}

// The receiving side's numbers for the video: frames decoded, decoder rate, codec, frame size;
// and its route, the type of this side's candidate in the pair ICE selected ("host", "srflx",
// "prflx" or "relay"; null before ICE connects).
export async function videoStats(pc) {
  const report = await pc.getStats();
  const found = { framesDecoded: 0, framesPerSecond: 0, codec: null, frameWidth: 0, frameHeight: 0, route: null };
  for (const stats of report.values()) {
    if (stats.type === "transport" && stats.selectedCandidatePairId) {
      const pair = report.get(stats.selectedCandidatePairId);
      found.route = report.get(pair?.localCandidateId)?.candidateType ?? null;
    } else if (stats.type === "inbound-rtp" && stats.kind === "video") {
      found.framesDecoded = stats.framesDecoded ?? 0;
      found.framesPerSecond = stats.framesPerSecond ?? 0;
      found.codec = report.get(stats.codecId)?.mimeType ?? null;
      found.frameWidth = stats.frameWidth ?? 0;
      found.frameHeight = stats.frameHeight ?? 0;
    }
  }
  return found;
}
