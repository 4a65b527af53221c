console.log('golden placeholder')
