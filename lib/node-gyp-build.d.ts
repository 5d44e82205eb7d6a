declare module 'node-gyp-build' {
  function load(directory: string): unknown;
  export = load;
}
