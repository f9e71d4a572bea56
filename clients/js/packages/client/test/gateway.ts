// The gateway of the integration tests, configured as production is (HS256 user JWTs with issuer and
// audience, a publisher key), and the user JWTs it accepts.

import { createHmac, randomBytes } from "node:crypto";

import { GatewayProcess } from "@herald/testing";

const JWT_SECRET = `client-tests-jwt-${randomBytes(16).toString("hex")}`;
const PUBLISHER_KEY = `client-tests-publisher-${randomBytes(16).toString("hex")}`;
const ISSUER = "https://issuer.herald.test/";
const AUDIENCE = "herald-client-tests";

export function startGateway(): Promise<GatewayProcess> {
  return GatewayProcess.start({
    env: {
      HERALD_JWT_HS256_SECRET: JWT_SECRET,
      HERALD_JWT_ISSUER: ISSUER,
      HERALD_JWT_AUDIENCE: AUDIENCE,
      WEBSOCKET_TOKEN_SECRET: `client-tests-token-${randomBytes(16).toString("hex")}`,
      HERALD_PUBLISHER_KEYS: `tests=${PUBLISHER_KEY}`,
    },
  });
}

/** Publishes one notification to `userIds` on the internal listener; returns the created ids. */
export function publish(gateway: GatewayProcess, userIds: string[], notification: Record<string, unknown>) {
  return gateway.publishTo(`${gateway.internalUrl}/api/publish`, { userIds, notification }, {
    Authorization: `Bearer ${PUBLISHER_KEY}`,
  });
}

/** An HS256 user JWT the gateway accepts, valid for `seconds`. */
export function userJwt(sub: string, seconds = 600): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, iat: now, exp: now + seconds, iss: ISSUER, aud: AUDIENCE })}`;
  return `${unsigned}.${createHmac("sha256", JWT_SECRET).update(unsigned).digest("base64url")}`;
}
