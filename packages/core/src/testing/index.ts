/**
 * The testing entry (`@tessera/core/testing`): the conformance suite every backend runs, and the
 * arbitraries and comparison it is built from. It imports vitest and fast-check, so it is a
 * separate entry point: the main `@tessera/core` entry never loads them.
 */
export type { ConformanceOptions, MakeBackend, Reference } from './conformance.js'
export { describeConformance, checkAgainstReference, checkRunInto, describeCase, garbageLike } from './conformance.js'
export type { Mismatch, TolClass, Tolerance } from './compare.js'
export { compareOutputs, tolClassOf, toleranceFor, transcendentalPrims } from './compare.js'
export type { ProgramCase } from './arbitraries.js'
export { floatIn, grid, intIn, boolElem, shapeArb, hostArb, permArb, oneEqn } from './arbitraries.js'
export { primCases } from './prim-cases.js'
export type { Node as RandomNode, RandomProgramCase } from './random-programs.js'
export { nodeArb, buildNode, randomProgramArb, randomProgramTolerance } from './random-programs.js'
export type { EdgeCase } from './edge-cases.js'
export { edgeCases } from './edge-cases.js'
