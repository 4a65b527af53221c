// A CommonJS TypeScript file (NodeNext): `import` compiles to require(), which Node >= 20.19 allows for ES modules.
import { getOrThrow, random } from '@tessera/core'
import { fsq } from '@tessera/quantizers'

const q = getOrThrow(fsq({ levels: [5, 5] }))
const init = q.init(random.keyFromSeed(0))
export const stateNames: string[] = Object.keys(init.state)
