// The child bundle embeds .proto3 schemas as text (esbuild's text loader, see bundle.ts).
declare module '*.proto3' {
  const text: string
  export default text
}
