// Consistency domains named over several primary nodes (issue 8 kind 5; docs/replication.md
// "Several primaries on one secondary"). Pure: the secondary's pair-create check.
//
// By default a secondary's time domain is the groups replicated from one primary node
// (domainKeyOf in consistency-domain.ts): positions of different primaries are never
// compared. `pair create --domain NAME` puts groups of several primaries into one domain,
// reflected together by write time. That is consistent (I1 across the primaries) only when a
// write that depends on an answered write of another primary carries a later write time, so
// the secondary refuses a named domain over several primaries unless every member's primary
// declared so:
//
// - it runs `--max-clock-skew D` (D > 0) and answers a host write only once its clock has
//   passed the write's time + D (commit wait, src/primary/commit-wait.ts); and
// - its write times come from a clock: `--write-time clock`, or `--write-time host`, where
//   hosts stamp from one time source within D of the primaries' clocks (writes that carry no
//   host time, as every NBD write, are then stamped from the node's clock, not from the last
//   recorded time). `counter` times count writes, never time: never comparable.
//
// Then a dependent write w2 (issued after w1 was answered by primary P) is stamped at or
// after the moment of that answer, on a clock within D of P's, which had passed
// time(w1) + D: time(w2) > time(w1). A named domain of one primary's groups needs none of
// this (one node's positions are always comparable), so it is checked only once a second
// primary joins. `--write-time host` without --max-clock-skew is refused too: an NBD write
// carries no time and is stamped with the node's last recorded time, which says nothing of
// another node's writes.
import type { WriteTimePolicy } from "./types.ts";

/** What a primary declares about its write times when it pairs a group into a named domain. */
export interface NamedDomainDeclaration {
  /** The domain's name (`pair create --domain NAME`). */
  readonly name: string;
  readonly writeTimePolicy: WriteTimePolicy;
  /** The primary's `--max-clock-skew` in ms; 0: none declared (no commit wait). */
  readonly maxClockSkewMs: number;
}

/** One group already in a named domain on the secondary. */
export interface NamedDomainMember {
  readonly group: string;
  readonly primaryNode: string;
  readonly domain: NamedDomainDeclaration;
}

/** Why a primary's write times are not comparable with another's, or undefined when they are. */
export function incomparableWhy(declaration: Pick<NamedDomainDeclaration, "writeTimePolicy" | "maxClockSkewMs">): string | undefined {
  if (declaration.writeTimePolicy === "counter") return "runs --write-time counter (its write times count writes, they are no time)";
  if (!(declaration.maxClockSkewMs > 0)) return `runs --write-time ${declaration.writeTimePolicy} without --max-clock-skew (no commit wait: a dependent write on another primary may carry an earlier time)`;
  return undefined;
}

/**
 * The pair-create check on the secondary: undefined when `primaryNode` may pair a group into
 * the named domain, else the refusal's text (TM_ERR_DOMAIN_INCOMPARABLE). `members`: the
 * groups already in the domain of that name (any primary).
 */
export function namedDomainRefusal(primaryNode: string, group: string, declaration: NamedDomainDeclaration, members: readonly NamedDomainMember[]): string | undefined {
  const inDomain = members.filter((m) => m.domain.name === declaration.name);
  const others = inDomain.filter((m) => m.primaryNode !== primaryNode);
  if (others.length === 0) return undefined; // one primary's positions are always comparable
  const mine = incomparableWhy(declaration);
  if (mine !== undefined) {
    return `domain ${declaration.name} has groups of primary ${others[0]?.primaryNode ?? "?"}; group ${group} of primary ${primaryNode} may join it only with comparable write times, but ${primaryNode} ${mine}. ` +
      "Run every primary of the domain with --max-clock-skew (and --write-time clock or host), or pair without --domain (one domain per primary)";
  }
  for (const member of inDomain) {
    const why = incomparableWhy(member.domain);
    if (why === undefined) continue;
    return `domain ${declaration.name} has group ${member.group} of primary ${member.primaryNode}, which ${why}; groups of another primary (${primaryNode}) may join it only when every member's write times are comparable. ` +
      `Pair ${group} without --domain, or into another domain`;
  }
  return undefined;
}
