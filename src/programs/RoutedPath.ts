/** The path of a request line's target, as sent: everything before the query. */
export const requestPath = (requestUrl: string): string => {
  const query = requestUrl.indexOf("?")
  return query === -1 ? requestUrl : requestUrl.slice(0, query)
}

/**
 * A request's path as the daemon's router matches it: find-my-way (in @effect/platform) ignores a trailing
 * slash, doubled slashes and case, so "/Events/" and "//events" are served as "/events". Every check made before
 * routing (the secret, the leader's routes) must read the path the same way, or such a spelling slips past it.
 * The path is taken from the request line itself: the URL parser reads "//events" as a host.
 */
export const routedPath = (requestUrl: string): string => {
  const path = requestPath(requestUrl).replace(/\/{2,}/g, "/").toLowerCase()
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path
}
