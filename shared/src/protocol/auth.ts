// Shared-token authentication: the token travels in the upgrade request's Authorization header and
// is compared in constant time (SHA-256 of both sides, so lengths never leak through timing).

import crypto from 'node:crypto';

export function bearer(token: string): string {
  return `Bearer ${token}`;
}

function digest(s: string): Buffer {
  return crypto.createHash('sha256').update(s, 'utf8').digest();
}

/** A checker for one expected token. */
export function tokenChecker(expected: string): (authorizationHeader: string | undefined) => boolean {
  const want = digest(expected);
  return (header) => {
    const given = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : '';
    // always hash and compare, even for a missing header, so every rejection costs the same
    const ok = crypto.timingSafeEqual(digest(given), want);
    return ok && given.length > 0;
  };
}
