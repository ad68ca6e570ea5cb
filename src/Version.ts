/** the version `--version` prints and a leader writes in its lock key */
export const version = "0.1.0"
